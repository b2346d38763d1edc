//! The row path (the CPU): prompts, and the generation steps of several sessions in one pass
//! over the weights. Every operation of a position depends only on that position's row and on
//! its own session's cached keys and values, computed the same way whatever else is in the
//! batch:
//!
//! - matrix products: prompt rows through [`Linear::rows`] (our batched quantized kernels,
//!   whose products are the same bits for a token in any batch, or the batch-invariant dense
//!   kernel); generated tokens through generation's 8-bit products for several tokens at once
//!   (`crate::kernels::par_gemv_many`, each token the bits of its one-token product);
//! - norms, rotary embeddings, the SiLU gate and the residual adds per row, with the same code
//!   as generation;
//! - attention per row over its session's positions up to its own ([`attend_rows`]), the code
//!   generation runs for a token at that position.
//!
//! So running a prompt whole, in chunks, or after a cached prefix gives the same bits (what
//! the prompt cache relies on, see `crate::session`), and a generated token gets the logits
//! [`Llama::forward`] gives it alone, bit for bit, whichever sessions share its step (what
//! batched generation relies on, see `crate::batcher`). The tensor path (`super::attention`)
//! stays for the devices and formats this one does not cover; there the prompt cache is off
//! and sessions step one at a time.

use std::ops::Range;

use super::attention::attend_rows;
use super::linear::{Linear, rows_mixed};
use super::ops::{Norm, add_assign};
use super::{LayerKv, Llama, LlamaCache, Phase};
use crate::error::{Error, Result};
use crate::kernels::QMatrix;

/// One session's part of a forward pass: its cache and the tokens to run after it.
pub(crate) struct Step<'a> {
    pub(crate) cache: &'a mut LlamaCache,
    /// At least one.
    pub(crate) tokens: &'a [u32],
    pub(crate) phase: Phase,
}

impl Step<'_> {
    /// A generated token: generation's 8-bit products, as [`Llama::forward`] runs it alone.
    fn decodes(&self) -> bool {
        self.phase == Phase::Generate && self.tokens.len() == 1
    }
}

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

    /// Runs `steps`, each after the positions of its own cache, and returns the logits of
    /// each step's last token: one pass over the weights where the row path covers them all
    /// (see the module docs: each step gets the bits it would get alone), else one step after
    /// the other.
    pub(crate) fn forward_steps(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        if let [one] = steps {
            return Ok(vec![self.forward(one.cache, one.tokens, one.phase)?]);
        }
        if let Some(empty) = steps.iter().position(|s| s.tokens.is_empty()) {
            return Err(Error::Internal(format!("step {empty} has no token")));
        }
        if self.rows && (self.decode.is_some() || !steps.iter().any(Step::decodes)) {
            return rayon::scope(|_| self.rows_in_pool(steps));
        }
        steps
            .iter_mut()
            .map(|s| self.forward(s.cache, s.tokens, s.phase))
            .collect()
    }

    /// Runs the prompt `tokens` at the positions following the cache's, on plain rows; returns
    /// the logits of the last one. The whole pass runs on the rayon pool, as generation's step
    /// does: each product splits with a join, not a wake-up of a sleeping thread.
    pub(super) fn prompt_rows(&self, cache: &mut LlamaCache, tokens: &[u32]) -> Result<Vec<f32>> {
        let step = Step {
            cache,
            tokens,
            phase: Phase::Prompt,
        };
        let mut logits = rayon::scope(|_| self.rows_in_pool(&mut [step]))?;
        Ok(logits.pop().expect("one step"))
    }

    fn rows_in_pool(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        let shape = self.shape;
        let half = shape.head_dim / 2;
        let q_dim = shape.heads * shape.head_dim;
        let kv_dim = shape.kv_heads * shape.head_dim;
        let decode = self.decode.as_ref();
        // Generated tokens first: the leading `decoding` rows go through generation's
        // products (`forward_steps` only batches them when `decode` is there).
        let mut order: Vec<usize> = (0..steps.len()).collect();
        order.sort_by_key(|&i| !steps[i].decodes());
        let decoding = match decode {
            Some(_) => order.iter().take_while(|&&i| steps[i].decodes()).count(),
            None => 0,
        };
        // Each step's rows in the stacked batch, and each row's position.
        let mut spans: Vec<(usize, Range<usize>)> = Vec::with_capacity(steps.len());
        let (mut tokens, mut positions) = (Vec::new(), Vec::new());
        for &i in &order {
            let step = &steps[i];
            let start = tokens.len();
            tokens.extend_from_slice(step.tokens);
            positions.extend(step.cache.len..step.cache.len + step.tokens.len());
            spans.push((i, start..tokens.len()));
        }
        let mut x = self.embeddings.lookup(&tokens, &self.device)?;
        let dim = x.len() / tokens.len();
        let rope = |rows: &mut [f32], width: usize| {
            for (row, &p) in rows.chunks_exact_mut(width).zip(&positions) {
                let (cos, sin) = (
                    &self.cos_rows[p * half..(p + 1) * half],
                    &self.sin_rows[p * half..(p + 1) * half],
                );
                shape.rope.apply(row, cos, sin);
            }
        };
        // The stacked matrix generation multiplies for `linears`.
        let product = |linears: &[&Linear],
                       stacked: Option<&QMatrix>,
                       x: &[f32],
                       biases: &[Option<&[f32]>]|
         -> Result<Vec<Vec<f32>>> {
            rows_mixed(linears, stacked, x, decoding, biases)
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let m = decode.map(|d| &d.layers[l]);
            let h = norm_rows(&layer.attn_norm, &x, dim);
            let bias = |range: Range<usize>| layer.qkv_bias.as_ref().map(|b| &b[range]);
            let [mut q, mut k, v]: [Vec<f32>; 3] = product(
                &[&layer.wq, &layer.wk, &layer.wv],
                m.map(|m| &*m.qkv),
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
            for (i, rows) in &spans {
                let at = rows.start * kv_dim..rows.end * kv_dim;
                steps[*i].cache.layers[l].append(&k[at.clone()], &v[at], kv_dim);
            }
            let kvs: Vec<(&LayerKv, usize)> = spans
                .iter()
                .flat_map(|(i, rows)| {
                    let kv = &steps[*i].cache.layers[l];
                    rows.clone().map(move |r| (kv, r))
                })
                .map(|(kv, r)| (kv, positions[r] + 1))
                .collect();
            let mut attn = vec![0f32; q.len()];
            attend_rows(&mut q, &kvs, shape, &mut attn);
            let [o]: [Vec<f32>; 1] = product(&[&layer.wo], m.map(|m| &*m.wo), &attn, &[None])?
                .try_into()
                .expect("one output");
            add_assign(&mut x, &o);

            let h = norm_rows(&layer.ffn_norm, &x, dim);
            let [g, u]: [Vec<f32>; 2] = product(
                &[&layer.gate, &layer.up],
                m.map(|m| &*m.gate_up),
                &h,
                &[None, None],
            )?
            .try_into()
            .expect("two outputs");
            // Generation's expression.
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let [d]: [Vec<f32>; 1] = product(&[&layer.down], m.map(|m| &*m.down), &act, &[None])?
                .try_into()
                .expect("one output");
            add_assign(&mut x, &d);
        }
        for step in steps.iter_mut() {
            step.cache.len += step.tokens.len();
        }
        let mut last = Vec::with_capacity(spans.len() * dim);
        let mut row = Vec::with_capacity(dim);
        for (_, rows) in &spans {
            self.norm
                .apply(&x[(rows.end - 1) * dim..rows.end * dim], &mut row);
            last.extend_from_slice(&row);
        }
        let [logits]: [Vec<f32>; 1] =
            product(&[&self.output], decode.map(|d| &*d.output), &last, &[None])?
                .try_into()
                .expect("one output");
        let vocab = logits.len() / spans.len();
        let mut out = vec![Vec::new(); steps.len()];
        for ((i, _), logits) in spans.iter().zip(logits.chunks_exact(vocab)) {
            out[*i] = logits.to_vec();
        }
        Ok(out)
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
