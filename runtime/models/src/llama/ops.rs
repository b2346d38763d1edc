//! The small operations of the forward pass, on tensors (prompts) and on plain rows
//! (generation): RMS norms, rotary embeddings, the causal mask, dot products.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::RmsNorm;

use crate::error::Result;

/// An RMS norm, as a candle module (prompts) and as plain weights (generation).
pub(super) struct Norm {
    module: RmsNorm,
    weight: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(super) fn new(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?.to_vec1()?,
            module: RmsNorm::new(weight, eps),
            eps: eps as f32,
        })
    }

    /// Normalizes the last dimension of `x`.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.module.forward(x)?)
    }

    /// candle's `rms_norm` of one row (partial sums in 8 lanes).
    pub(super) fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        let m = self.divisor(x);
        out.clear();
        out.extend(x.iter().zip(&self.weight).map(|(&v, &w)| v / m * w));
    }

    /// Normalizes, in place, each row of `x` as wide as the weights (Qwen3's per-head norms of
    /// queries and keys).
    pub(super) fn apply_each(&self, x: &mut [f32]) {
        for row in x.chunks_exact_mut(self.weight.len()) {
            let m = self.divisor(row);
            row.iter_mut()
                .zip(&self.weight)
                .for_each(|(v, &w)| *v = *v / m * w);
        }
    }

    fn divisor(&self, x: &[f32]) -> f32 {
        (dot(x, x) / x.len() as f32 + self.eps).sqrt()
    }
}

/// How rotary embeddings pair the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rope {
    /// Adjacent pairs `(2i, 2i + 1)`: candle's `rope_i`, llama.cpp's "normal" rope, for which
    /// its converter permutes llama's Q/K weights.
    Interleaved,
    /// Dimension `i` with `i + head_dim / 2`: candle's `rope`, llama.cpp's NEOX rope (Qwen2,
    /// Qwen3: their weights are stored as trained).
    Halves,
}

impl Rope {
    /// Rotates `x` (`(batch, heads, seq, head_dim)`, contiguous) by the `(seq, head_dim / 2)`
    /// tables.
    pub(super) fn tensor(self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
            Self::Halves => candle_nn::rotary_emb::rope(x, cos, sin)?,
        })
    }

    /// Rotates every head of one position's `x` by that position's `cos` and `sin` rows: the
    /// same maths as [`Rope::tensor`].
    pub(super) fn apply(self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        for head in x.chunks_exact_mut(2 * half) {
            match self {
                Self::Interleaved => {
                    for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                        let (a, b) = (pair[0], pair[1]);
                        pair[0] = a * c - b * s;
                        pair[1] = a * s + b * c;
                    }
                }
                Self::Halves => {
                    let (first, second) = head.split_at_mut(half);
                    for (((a, b), &c), &s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
                        let (x1, x2) = (*a, *b);
                        *a = x1 * c - x2 * s;
                        *b = x1 * s + x2 * c;
                    }
                }
            }
        }
    }
}

#[inline]
/// `a . b` with 8 partial sums (vectorizes; the float additions in another order than a
/// sequential sum).
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, a_tail) = a.as_chunks::<8>();
    let (b8, b_tail) = b.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

pub(super) fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, &y)| *x += y);
}

/// Additive causal mask `(seq, pos + seq)`: query `i` (at position `pos + i`) sees keys up to
/// its own position.
pub(super) fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let keys = pos + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..keys).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, keys), device)?)
}

/// `cos` and `sin` of `position x base^(-2i/head_dim)`, as candle's `precomput_freqs_cis`.
pub(super) fn rotary_tables(
    positions: usize,
    head_dim: usize,
    base: f64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / (base as f32).powf(i as f32 / head_dim as f32))
        .collect();
    let angles: Vec<f32> = (0..positions)
        .flat_map(|p| theta.iter().map(move |t| p as f32 * t))
        .collect();
    let angles = Tensor::from_vec(angles, (positions, head_dim / 2), device)?;
    Ok((angles.cos()?, angles.sin()?))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::Rope;

    /// The row version of each rope style against candle's tensor op.
    #[test]
    fn row_rope_matches_candle() {
        let (heads, head_dim, pos) = (3, 8, 5);
        let (cos, sin) = super::rotary_tables(pos + 1, head_dim, 10_000.0, &Device::Cpu).unwrap();
        let x: Vec<f32> = (0..heads * head_dim)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        for rope in [Rope::Interleaved, Rope::Halves] {
            let t = Tensor::from_slice(&x, (1, heads, 1, head_dim), &Device::Cpu).unwrap();
            let (c, s) = (
                cos.narrow(0, pos, 1).unwrap(),
                sin.narrow(0, pos, 1).unwrap(),
            );
            let want: Vec<f32> = rope
                .tensor(&t, &c, &s)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut got = x.clone();
            let (c, s): (Vec<f32>, Vec<f32>) = (
                c.flatten_all().unwrap().to_vec1().unwrap(),
                s.flatten_all().unwrap().to_vec1().unwrap(),
            );
            rope.apply(&mut got, &c, &s);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "{rope:?}: {got:?} vs {want:?}");
            }
            assert_ne!(got, x, "{rope:?} rotated nothing");
        }
    }
}
