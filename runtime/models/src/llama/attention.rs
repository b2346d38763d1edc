//! Self-attention: over tensors (one matrix product per KV head group), and over plain rows
//! for generated tokens and for prompts on the CPU (the same code per row, so a position's
//! output does not depend on the batch it was computed in).

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::ops::{Norm, dot};
use super::{Layer, LayerKv, Phase, Shape};
use crate::error::Result;

/// Self-attention of one layer over `x` (`(1, seq, dim)`, normed), appending to `kv`.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
pub(super) fn attention(
    layer: &Layer,
    shape: Shape,
    kv: &mut LayerKv,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: Option<&Tensor>,
    phase: Phase,
) -> Result<Tensor> {
    let Shape {
        heads,
        kv_heads,
        head_dim,
        rope,
    } = shape;
    let (b, seq, _) = x.dims3()?;
    let split = |t: Tensor, n: usize, norm: Option<&Norm>| -> Result<Tensor> {
        let t = t.reshape((b, seq, n, head_dim))?;
        let t = match norm {
            Some(norm) => norm.forward(&t)?,
            None => t,
        };
        Ok(t.transpose(1, 2)?.contiguous()?)
    };
    let q = split(layer.wq.forward(x, phase)?, heads, layer.q_norm.as_ref())?;
    let k = split(layer.wk.forward(x, phase)?, kv_heads, layer.k_norm.as_ref())?;
    let v = split(layer.wv.forward(x, phase)?, kv_heads, None)?;
    let q = rope.tensor(&q, cos, sin)?;
    let k = rope.tensor(&k, cos, sin)?;
    // Into the cache as `[position][kv_heads x head_dim]` rows, then every cached position
    // back as `(b, kv_heads, positions, head_dim)`.
    let kv_dim = kv_heads * head_dim;
    let rows = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.transpose(1, 2)?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1()?)
    };
    kv.append(&rows(&k)?, &rows(&v)?, kv_dim);
    let positions = kv.k.len() / kv_dim;
    let cached = |data: &[f32]| -> Result<Tensor> {
        Ok(
            Tensor::from_slice(data, (b, positions, kv_heads, head_dim), x.device())?
                .to_dtype(q.dtype())?
                .transpose(1, 2)?
                .contiguous()?,
        )
    };
    let (k, v) = (cached(&kv.k)?, cached(&kv.v)?);
    // Query heads h = g * group + r share KV head g: stack each group's rows into one matrix.
    let group = heads / kv_heads;
    let q =
        (q * (1.0 / (head_dim as f64).sqrt()))?.reshape((b, kv_heads, group * seq, head_dim))?;
    let scores = q.matmul(&k.t()?)?;
    let scores = match mask {
        Some(mask) => scores
            .reshape((b, kv_heads, group, seq, positions))?
            .broadcast_add(mask)?
            .reshape((b, kv_heads, group * seq, positions))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let y = probs.matmul(&v)?;
    let y = y
        .reshape((b, heads, seq, head_dim))?
        .transpose(1, 2)?
        .reshape((b, seq, heads * head_dim))?;
    layer.wo.forward(&y, phase)
}

/// Attention of one generated token: `q` (`heads x head_dim`, rotated) against every cached
/// position of `kv` (this token's included) into `out`; the tensor path's maths. Heads are
/// independent: they split over the rayon pool.
pub(super) fn attend(q: &mut [f32], kv: &LayerKv, shape: Shape, out: &mut Vec<f32>) {
    let head_dim = shape.head_dim;
    let positions = kv.k.len() / (shape.kv_heads * head_dim);
    out.clear();
    out.resize(shape.heads * head_dim, 0.0);
    q.par_chunks_mut(head_dim)
        .zip(out.par_chunks_mut(head_dim))
        .enumerate()
        .for_each_init(Vec::new, |scores, (h, (q, out))| {
            head(q, kv, h, positions, shape, scores, out)
        });
}

/// Attention of the rows `q` (each `heads x head_dim`, rotated) into `out`: row `i` against
/// the first `rows[i].1` positions of its session's `rows[i].0` (its own included, already
/// appended), exactly what [`attend`] computes for a generated token at that position. Rows
/// split over the rayon pool.
pub(super) fn attend_rows(
    q: &mut [f32],
    rows: &[(&LayerKv, usize)],
    shape: Shape,
    out: &mut [f32],
) {
    let width = shape.heads * shape.head_dim;
    q.par_chunks_mut(width)
        .zip(out.par_chunks_mut(width))
        .zip(rows)
        .for_each_init(Vec::new, |scores, ((q, out), &(kv, positions))| {
            let heads = q
                .chunks_exact_mut(shape.head_dim)
                .zip(out.chunks_exact_mut(shape.head_dim));
            for (h, (q, out)) in heads.enumerate() {
                head(q, kv, h, positions, shape, scores, out);
            }
        });
}

/// Query head `h` (`q`, scaled in place) against the first `positions` cached positions of its
/// KV head, into `out` (zeroed): scores, a softmax in position order, the weighted values.
fn head(
    q: &mut [f32],
    kv: &LayerKv,
    h: usize,
    positions: usize,
    shape: Shape,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let head_dim = shape.head_dim;
    let kv_dim = shape.kv_heads * head_dim;
    let g = h / (shape.heads / shape.kv_heads);
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let (keys, values) = (&kv.k[..positions * kv_dim], &kv.v[..positions * kv_dim]);
    q.iter_mut().for_each(|v| *v *= scale);
    scores.clear();
    scores.extend(
        keys.chunks_exact(kv_dim)
            .map(|k| dot(q, &k[g * head_dim..(g + 1) * head_dim])),
    );
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for (p, v) in scores.iter().zip(values.chunks_exact(kv_dim)) {
        let p = p / sum;
        let v = &v[g * head_dim..(g + 1) * head_dim];
        out.iter_mut().zip(v).for_each(|(o, &v)| *o += p * v);
    }
}
