//! The prompt path on plain rows (the CPU): every operation of a prompt position depends only
//! on that position's row and on the cached keys and values before it, computed the same way
//! whatever else is in the batch:
//!
//! - matrix products through [`Linear::rows`] (our batched quantized kernels, whose products
//!   are the same bits for a token in any batch, or the batch-invariant dense kernel);
//! - norms, rotary embeddings, the SiLU gate and the residual adds per row, with the same code
//!   as generation;
//! - attention per row over the positions up to its own ([`attend_rows`]), the code
//!   generation runs for a token at that position.
//!
//! So running a prompt whole, in chunks, or after a cached prefix gives the same bits: what the
//! prompt cache relies on (see `crate::session`). The tensor path (`super::attention`) stays
//! for the devices and formats this one does not cover; there the prompt cache is off.

use super::attention::attend_rows;
use super::linear::{Linear, rows_of};
use super::ops::{Norm, add_assign};
use super::{Llama, LlamaCache};
use crate::error::Result;

impl Llama {
    /// Whether prompts run on plain rows ([`Llama::prompt_rows`]): on the CPU, with every
    /// matrix either dense or in our kernels' formats.
    pub(super) fn rows_cover(&self) -> bool {
        self.device.is_cpu()
            && self.output.has_rows()
            && self.layers.iter().all(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .all(|m| m.has_rows())
            })
    }

    /// Runs the prompt `tokens` at the positions following the cache's, on plain rows; returns
    /// the logits of the last one. The whole pass runs on the rayon pool, as generation's step
    /// does: each product splits with a join, not a wake-up of a sleeping thread.
    pub(super) fn prompt_rows(&self, cache: &mut LlamaCache, tokens: &[u32]) -> Result<Vec<f32>> {
        rayon::scope(|_| self.prompt_rows_in_pool(cache, tokens))
    }

    fn prompt_rows_in_pool(&self, cache: &mut LlamaCache, tokens: &[u32]) -> Result<Vec<f32>> {
        let shape = self.shape;
        let half = shape.head_dim / 2;
        let q_dim = shape.heads * shape.head_dim;
        let kv_dim = shape.kv_heads * shape.head_dim;
        let pos = cache.len;
        let mut x = self.embeddings.lookup(tokens, &self.device)?;
        let dim = x.len() / tokens.len();
        let rope = |rows: &mut [f32], width: usize| {
            for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                let p = pos + i;
                let (cos, sin) = (
                    &self.cos_rows[p * half..(p + 1) * half],
                    &self.sin_rows[p * half..(p + 1) * half],
                );
                shape.rope.apply(row, cos, sin);
            }
        };
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers) {
            let h = norm_rows(&layer.attn_norm, &x, dim);
            let bias = |range: std::ops::Range<usize>| layer.qkv_bias.as_ref().map(|b| &b[range]);
            let [mut q, mut k, v]: [Vec<f32>; 3] = rows_of(
                &[&layer.wq, &layer.wk, &layer.wv],
                &h,
                &[
                    bias(0..q_dim),
                    bias(q_dim..q_dim + kv_dim),
                    bias(q_dim + kv_dim..q_dim + 2 * kv_dim),
                ],
            )?
            .try_into()
            .expect("three outputs");
            if let Some(norm) = &layer.q_norm {
                norm.apply_each(&mut q);
            }
            if let Some(norm) = &layer.k_norm {
                norm.apply_each(&mut k);
            }
            rope(&mut q, q_dim);
            rope(&mut k, kv_dim);
            kv.append(&k, &v, kv_dim);
            let mut attn = vec![0f32; q.len()];
            attend_rows(&mut q, kv, pos, shape, &mut attn);
            add_assign(&mut x, &layer.wo.rows(&attn, None)?);

            let h = norm_rows(&layer.ffn_norm, &x, dim);
            let act = gated(&layer.gate, &layer.up, &h)?;
            add_assign(&mut x, &layer.down.rows(&act, None)?);
        }
        cache.len += tokens.len();
        let mut last = Vec::with_capacity(dim);
        self.norm.apply(&x[x.len() - dim..], &mut last);
        self.output.rows(&last, None)
    }
}

/// Each row of `x` (`dim` wide) normed.
fn norm_rows(norm: &Norm, x: &[f32], dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    let mut row = Vec::with_capacity(dim);
    for x in x.chunks_exact(dim) {
        norm.apply(x, &mut row);
        out.extend_from_slice(&row);
    }
    out
}

/// `silu(gate · h) * (up · h)`, row by row: generation's expression.
fn gated(gate: &Linear, up: &Linear, h: &[f32]) -> Result<Vec<f32>> {
    let [g, u]: [Vec<f32>; 2] = rows_of(&[gate, up], h, &[None, None])?
        .try_into()
        .expect("two outputs");
    Ok(g.iter()
        .zip(&u)
        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
        .collect())
}
