//! The llama-family forward pass: llama (SmolLM, Llama 2/3, TinyLlama), Qwen2/Qwen2.5 and
//! Qwen3 GGUFs. The Qwen architectures are llama with small changes ([`arch`]): Qwen2 adds
//! biases to the q/k/v projections, Qwen3 a per-head RMS norm of queries and keys (and a head
//! width of its own, `attention.key_length`); both rotate halves of each head (NEOX rope)
//! where llama.cpp's llama files rotate adjacent pairs.
//!
//! Written here instead of using candle-transformers' `quantized_llama::ModelWeights`, whose
//! fields are private, for what a server needs:
//!
//! - **Prompts through the quantized weights, batched** (`crate::kernels::batch`): one
//!   product per matrix for all the prompt's tokens, activations rounded to 16 bits per block.
//!   candle's quantized kernels (and llama.cpp's) round activations to 8 bits, and with
//!   SmolLM2-135M Q4_1 that noise alone flips the first token of "What is the capital of
//!   France?" from "The" to "L" (logits 24.16 vs 24.55, where the exact values are 25.33 vs
//!   25.24), and the model then answers in broken French; 16 bits give 25.32 vs 25.24.
//!   Generation's one-token products keep 8-bit activations (memory-bound GEMV). An opt-in
//!   keeps `f32` copies of the matrices for prompts instead (`dense_prefill`, 4 bytes per
//!   weight).
//! - **Generation on plain buffers through our own kernels** (`crate::kernels`) when every
//!   matrix is `Q4_1` or `Q8_0` on the CPU (SmolLM2: `Q4_1` layers, `Q8_0` tied embeddings):
//!   candle has no SIMD kernel for `Q4_1`, and for a 135M model the ~30 tensor operations per
//!   layer (allocation, dispatch, a rayon fork/join each) cost as much as the arithmetic. One
//!   token is one `rayon::scope`: per layer an RMS norm, the activation quantized once per
//!   product, q/k/v in one matrix-vector product over their stacked rows, rotary embeddings,
//!   attention over the cache (heads in parallel), the output projection, gate/up stacked, down;
//!   each product splits its rows over the pool. Other formats keep candle's path.
//! - **A KV cache that grows in place**: `f32` rows per position, reserved in chunks, read by
//!   both paths, instead of a `Tensor::cat` of the whole cache at every token.
//! - **Grouped-query attention without repeating K/V** per query head: the query heads that
//!   share a KV head are stacked as rows of one matrix product (prompts) or read the same cache
//!   rows (generation).
//! - **The trained context window**, where `quantized_llama` stops at `MAX_SEQ_LEN` = 4096
//!   rotary positions, and no per-(length, position) mask cache that grows for ever.
//! - **Quantized token embeddings** (rows dequantized on lookup) instead of an `f32` table.
//!
//! The maths is candle's: rotary embeddings (`rope_i` for llama, what llama.cpp's converter
//! prepares Q/K for; `rope` for Qwen), RMS norms, SiLU-gated MLP, tied output projection when
//! `output.weight` is absent. `tests/all/tiny.rs` and the tests in `tests.rs` check the logits
//! against candle-transformers' `quantized_llama`, `quantized_qwen2` and `quantized_qwen3` on
//! the same files: the kernels compute candle's integer block products exactly and differ only
//! in the order of the float additions (8 SIMD lanes, partial sums), well within 1e-4.

mod arch;
mod attention;
#[cfg(test)]
mod batch_tests;
mod linear;
mod ops;
mod rows;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

pub(crate) use self::rows::Step;

use self::arch::Arch;
use self::attention::{attend, attention};
use self::linear::{Linear, densify, load_stacked, stacked};
use self::ops::{Norm, Rope, add_assign, causal_mask, rotary_tables};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, ModelMetadata};
use crate::kernels::{Q8Vector, QMatrix, par_gemv};

/// KV cache growth step in tokens: a session's cache starts this big and grows by this much, so
/// short chats do not reserve a whole context window (188 MB for SmolLM2 at 4096 tokens).
const KV_CHUNK: usize = 256;

/// Which weights a forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Processing the prompt: the batched quantized products, or the dense weights when
    /// loaded (compute-bound GEMMs).
    Prompt,
    /// Generating: quantized weights (memory-bound GEMVs).
    Generate,
}

struct Layer {
    attn_norm: Norm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    /// Qwen2's q, k and v biases, concatenated like the rows of a stacked q/k/v product (the
    /// linears hold them as tensors for the prompt path).
    qkv_bias: Option<Vec<f32>>,
    /// Qwen3's per-head norms of queries and keys (`head_dim` weights each).
    q_norm: Option<Norm>,
    k_norm: Option<Norm>,
    wo: Linear,
    ffn_norm: Norm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A layer's matrices as generation multiplies them: q/k/v in one product, gate/up in one.
struct DecodeLayer {
    qkv: Arc<QMatrix>,
    wo: Arc<QMatrix>,
    gate_up: Arc<QMatrix>,
    down: Arc<QMatrix>,
}

/// Everything generation needs from our kernels; `None` in [`Llama`] (some matrix in a format
/// they do not read, or not on the CPU) means generation runs through candle.
struct Decode {
    layers: Vec<DecodeLayer>,
    output: Arc<QMatrix>,
}

/// Shape of the attention, and how it rotates positions.
#[derive(Clone, Copy, Debug)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    /// Width of a query, key and value head (`embedding_length / heads` but for Qwen3).
    head_dim: usize,
    rope: Rope,
}

/// Token embeddings, looked up quantized (rows dequantized on lookup).
enum Embeddings {
    Own(Arc<QMatrix>),
    Candle(Arc<QTensor>),
}

impl Embeddings {
    /// The rows of `tokens`, concatenated.
    fn lookup(&self, tokens: &[u32], device: &Device) -> Result<Vec<f32>> {
        match self {
            Self::Own(m) => {
                let mut out = Vec::with_capacity(tokens.len() * m.cols());
                for &t in tokens {
                    let t = t as usize;
                    if t >= m.rows() {
                        return Err(Error::InvalidInput(format!(
                            "token id {t} is outside the embeddings of {} tokens",
                            m.rows()
                        )));
                    }
                    out.extend(m.dequantize(t..t + 1));
                }
                Ok(out)
            }
            Self::Candle(q) => {
                let ids = Tensor::new(tokens, device)?;
                Ok(q.embedding(&ids)?
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1()?)
            }
        }
    }
}

/// The weights of a llama-family model. Immutable and shared by every session.
pub(crate) struct Llama {
    shape: Shape,
    /// Shared with `output` when tied.
    embeddings: Embeddings,
    layers: Vec<Layer>,
    norm: Norm,
    output: Linear,
    decode: Option<Decode>,
    /// Whether prompts run on plain rows (`prompt`): batch-invariant, so the prompt cache is
    /// exact.
    rows: bool,
    /// `(context_length, head_dim / 2)` rotary tables, as tensors and as plain rows.
    cos: Tensor,
    sin: Tensor,
    cos_rows: Vec<f32>,
    sin_rows: Vec<f32>,
    device: Device,
}

/// One layer's cached keys and values: `[position][kv_heads x head_dim]` each, grown in steps
/// of [`KV_CHUNK`] positions.
#[derive(Default)]
struct LayerKv {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl LayerKv {
    fn append(&mut self, k: &[f32], v: &[f32], kv_dim: usize) {
        let needed = self.k.len() + k.len();
        if needed > self.k.capacity() {
            let target = (needed / kv_dim).next_multiple_of(KV_CHUNK) * kv_dim;
            self.k.reserve_exact(target - self.k.len());
            self.v.reserve_exact(target - self.v.len());
        }
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
    }
}

/// Per-token buffers of generation, reused from one token to the next.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    q8: Q8Vector,
}

/// A session's KV cache: one per layer, plus the number of positions it holds. The default is
/// an empty placeholder with no layers (what a cache leaves behind when moved out).
#[derive(Default)]
pub(crate) struct LlamaCache {
    layers: Vec<LayerKv>,
    len: usize,
    /// Floats per position of a layer's keys (and of its values).
    kv_dim: usize,
    scratch: Scratch,
}

impl LlamaCache {
    /// Forgets every position and frees the keys and values.
    pub(crate) fn reset(&mut self) {
        for kv in &mut self.layers {
            *kv = LayerKv::default();
        }
        self.len = 0;
    }

    /// Drops what a failed forward pass left in some layers past the positions held.
    pub(crate) fn mend(&mut self) {
        self.truncate(self.len);
    }

    /// Keeps the first `positions` positions (at most those held) and the memory reserved. Also
    /// mends layers a failed forward pass left ahead of `len`.
    pub(crate) fn truncate(&mut self, positions: usize) {
        let positions = positions.min(self.len);
        for kv in &mut self.layers {
            kv.k.truncate(positions * self.kv_dim);
            kv.v.truncate(positions * self.kv_dim);
        }
        self.len = positions;
    }
}

/// Fails unless `linear` (tensor `name`) is a matrix of `rows` by `cols`: the forward pass
/// multiplies by the widths the metadata gives.
fn expect_shape(
    file: &GgufFile,
    name: &str,
    linear: &Linear,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let shape = linear.shape();
    if shape == Some((rows, cols)) {
        return Ok(());
    }
    Err(Error::invalid_model(
        file.path(),
        format!("tensor `{name}` has shape {shape:?}, expected [{rows}, {cols}]"),
    ))
}

impl Llama {
    /// Reads the weights of a llama-family GGUF. With `dense`, also keeps `f32` copies of the
    /// matrices for prompt processing (see the module docs).
    pub(crate) fn load(
        file: &mut GgufFile,
        meta: &ModelMetadata,
        device: &Device,
        dense: bool,
    ) -> Result<Self> {
        let arch = Arch::of(&meta.architecture).ok_or_else(|| Error::UnsupportedArchitecture {
            architecture: meta.architecture.clone(),
            supported: crate::gguf::SUPPORTED_ARCHITECTURES,
        })?;
        let head_dim = meta.head_dim;
        if meta.rope_dimension != head_dim {
            return Err(Error::invalid_model(
                file.path(),
                format!(
                    "partial rotary embeddings ({} of {head_dim} dims) are not supported",
                    meta.rope_dimension
                ),
            ));
        }
        // A vector of `len` floats (norm weights, biases).
        let vector = |file: &mut GgufFile, name: &str, len: usize| -> Result<Tensor> {
            let w = file.tensor(name, device)?.dequantize(device)?;
            if w.dims() != [len] {
                return Err(Error::invalid_model(
                    file.path(),
                    format!("tensor `{name}` has shape {:?}, expected [{len}]", w.dims()),
                ));
            }
            Ok(w)
        };
        let norm = |file: &mut GgufFile, name: &str, len: usize| -> Result<Norm> {
            Norm::new(vector(file, name, len)?, meta.rms_norm_eps)
        };
        let (dim, q_dim) = (meta.embedding_length, meta.head_count * head_dim);
        let kv_dim = meta.head_count_kv * head_dim;
        let mapped = match device.is_cpu() {
            true => QMatrix::from_gguf(file, "token_embd.weight")?,
            false => None,
        };
        let embeddings = match mapped {
            Some(m) => Embeddings::Own(Arc::new(m)),
            None => {
                let token_embd = file.tensor("token_embd.weight", device)?;
                match QMatrix::from_qtensor(&token_embd)? {
                    Some(m) => Embeddings::Own(Arc::new(m)),
                    None => Embeddings::Candle(Arc::new(token_embd)),
                }
            }
        };
        let embedding_shape = match &embeddings {
            Embeddings::Own(m) => Some((m.rows(), m.cols())),
            Embeddings::Candle(q) => q.shape().dims2().ok(),
        };
        // One row per token id the model takes (and, below, produces), as llama.cpp requires.
        let vocab = meta.vocab_size;
        if embedding_shape != Some((vocab, dim)) {
            return Err(Error::invalid_model(
                file.path(),
                format!(
                    "tensor `token_embd.weight` has shape {embedding_shape:?}, expected [{vocab}, \
                     {dim}]"
                ),
            ));
        }
        let mut output = if file.has_tensor("output.weight") {
            let mut linears = load_stacked(file, &["output.weight".into()], device)?;
            linears.remove(0)
        } else {
            // Tied: the output projection is the embedding matrix (shared, not copied).
            match &embeddings {
                Embeddings::Own(m) => Linear::own(m.clone(), 0..m.rows()),
                Embeddings::Candle(q) => Linear::candle(q.clone())?,
            }
        };
        expect_shape(file, "output.weight", &output, vocab, dim)?;
        // Not `block_count`, which is only the header's word: each block is tensors of the file.
        let mut layers =
            Vec::with_capacity(meta.block_count.min(file.content().tensor_infos.len()));
        for i in 0..meta.block_count {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            let bias = |n: &str| format!("blk.{i}.{n}.bias");
            let mut group = |names: &[&str]| -> Result<std::vec::IntoIter<Linear>> {
                let names: Vec<String> = names.iter().map(|n| name(n)).collect();
                Ok(load_stacked(file, &names, device)?.into_iter())
            };
            let mut qkv = group(&["attn_q", "attn_k", "attn_v"])?;
            let mut wo = group(&["attn_output"])?;
            let mut gate_up = group(&["ffn_gate", "ffn_up"])?;
            let mut down = group(&["ffn_down"])?;
            let next =
                |it: &mut std::vec::IntoIter<Linear>| it.next().expect("one linear per name");
            let (mut wq, mut wk, mut wv) = (next(&mut qkv), next(&mut qkv), next(&mut qkv));
            let (wo, down) = (next(&mut wo), next(&mut down));
            let (gate, up) = (next(&mut gate_up), next(&mut gate_up));
            let ffn = gate.shape().map_or(0, |(rows, _)| rows);
            for (linear, n, out, inp) in [
                (&wq, "attn_q", q_dim, dim),
                (&wk, "attn_k", kv_dim, dim),
                (&wv, "attn_v", kv_dim, dim),
                (&wo, "attn_output", dim, q_dim),
                (&gate, "ffn_gate", ffn, dim),
                (&up, "ffn_up", ffn, dim),
                (&down, "ffn_down", dim, ffn),
            ] {
                expect_shape(file, &name(n), linear, out, inp)?;
            }
            let qkv_bias = if arch.qkv_bias {
                let mut rows = Vec::with_capacity(q_dim + 2 * kv_dim);
                for (linear, n, len) in [
                    (&mut wq, "attn_q", q_dim),
                    (&mut wk, "attn_k", kv_dim),
                    (&mut wv, "attn_v", kv_dim),
                ] {
                    let b = vector(file, &bias(n), len)?;
                    rows.extend(b.to_vec1::<f32>()?);
                    linear.bias = Some(b);
                }
                Some(rows)
            } else {
                None
            };
            let (q_norm, k_norm) = if arch.qk_norm {
                (
                    Some(norm(file, &name("attn_q_norm"), head_dim)?),
                    Some(norm(file, &name("attn_k_norm"), head_dim)?),
                )
            } else {
                (None, None)
            };
            layers.push(Layer {
                attn_norm: norm(file, &name("attn_norm"), dim)?,
                wq,
                wk,
                wv,
                qkv_bias,
                q_norm,
                k_norm,
                wo,
                ffn_norm: norm(file, &name("ffn_norm"), dim)?,
                gate,
                up,
                down,
            });
        }
        if dense {
            let mut linears = vec![&mut output];
            for l in &mut layers {
                linears.extend([
                    &mut l.wq,
                    &mut l.wk,
                    &mut l.wv,
                    &mut l.wo,
                    &mut l.gate,
                    &mut l.up,
                    &mut l.down,
                ]);
            }
            densify(linears)?;
        }
        let decode = || -> Option<Decode> {
            let layers = layers
                .iter()
                .map(|l| {
                    Some(DecodeLayer {
                        qkv: stacked(&[&l.wq, &l.wk, &l.wv])?,
                        wo: stacked(&[&l.wo])?,
                        gate_up: stacked(&[&l.gate, &l.up])?,
                        down: stacked(&[&l.down])?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Decode {
                layers,
                output: stacked(&[&output])?,
            })
        };
        let decode = decode();
        let (cos, sin) = rotary_tables(meta.context_length, head_dim, meta.rope_freq_base, device)?;
        let mut llama = Self {
            shape: Shape {
                heads: meta.head_count,
                kv_heads: meta.head_count_kv,
                head_dim,
                rope: arch.rope,
            },
            embeddings,
            layers,
            norm: norm(file, "output_norm.weight", dim)?,
            output,
            decode,
            rows: false,
            cos_rows: cos.flatten_all()?.to_vec1()?,
            sin_rows: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            device: device.clone(),
        };
        llama.rows = llama.rows_cover();
        Ok(llama)
    }

    /// Whether a prompt's logits, and the keys and values it leaves in the cache, are the same
    /// bits however the prompt is split over forward passes (whole, in chunks, after a cached
    /// prefix): true where prompts run on plain rows (see `prompt`).
    pub(crate) fn batch_invariant(&self) -> bool {
        self.rows
    }

    /// Whether the token embeddings are a range of the mapped file.
    #[cfg(test)]
    fn embeddings_mapped(&self) -> bool {
        matches!(&self.embeddings, Embeddings::Own(m) if m.is_mapped())
    }

    /// An empty KV cache for this model.
    pub(crate) fn new_cache(&self) -> LlamaCache {
        LlamaCache {
            layers: (0..self.layers.len()).map(|_| LayerKv::default()).collect(),
            len: 0,
            kv_dim: self.shape.kv_heads * self.shape.head_dim,
            scratch: Scratch::default(),
        }
    }

    /// Runs `tokens` at the positions following the cache's and returns the logits of the last
    /// one. The caller keeps `cache.len() + tokens.len()` within the context window.
    pub(crate) fn forward(
        &self,
        cache: &mut LlamaCache,
        tokens: &[u32],
        phase: Phase,
    ) -> Result<Vec<f32>> {
        match (phase, tokens, &self.decode) {
            (Phase::Generate, &[token], Some(decode)) => {
                return self.decode_token(decode, cache, token);
            }
            (Phase::Prompt, _, _) if self.rows => return self.prompt_rows(cache, tokens),
            _ => {}
        }
        self.forward_tensors(cache, tokens, phase)
    }

    /// [`Llama::forward`] through candle's tensors: the path of the devices and formats the
    /// row paths do not cover.
    fn forward_tensors(
        &self,
        cache: &mut LlamaCache,
        tokens: &[u32],
        phase: Phase,
    ) -> Result<Vec<f32>> {
        let seq = tokens.len();
        let pos = cache.len;
        let x = self.embeddings.lookup(tokens, &self.device)?;
        let dim = x.len() / seq;
        let mut x = Tensor::from_vec(x, (1, seq, dim), &self.device)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos, &self.device)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers) {
            let h = layer.attn_norm.forward(&x)?;
            let h = attention(layer, self.shape, kv, &h, &cos, &sin, mask.as_ref(), phase)?;
            x = (x + h)?;
            let h = layer.ffn_norm.forward(&x)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h, phase)?)?;
            let h = layer
                .down
                .forward(&(gate * layer.up.forward(&h, phase)?)?, phase)?;
            x = (x + h)?;
        }
        cache.len += seq;
        // Only the last position's logits are needed.
        let last = x.narrow(1, seq - 1, 1)?;
        let logits = self.output.forward(&self.norm.forward(&last)?, phase)?;
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    }

    /// One generated token through our kernels, on plain buffers: the same maths as the
    /// tensor path, without its per-operation allocations and dispatch. The whole step runs on
    /// the rayon pool, so each matrix product splits its rows with a join, not a wake-up.
    fn decode_token(&self, w: &Decode, cache: &mut LlamaCache, token: u32) -> Result<Vec<f32>> {
        let shape = self.shape;
        let half = shape.head_dim / 2;
        let q_dim = shape.heads * shape.head_dim;
        let kv_dim = shape.kv_heads * shape.head_dim;
        let pos = cache.len;
        let cos = &self.cos_rows[pos * half..(pos + 1) * half];
        let sin = &self.sin_rows[pos * half..(pos + 1) * half];
        let LlamaCache {
            layers: kvs,
            len,
            scratch: s,
            ..
        } = cache;
        s.x = self.embeddings.lookup(&[token], &self.device)?;
        let mut logits = vec![0f32; w.output.rows()];
        rayon::scope(|_| {
            for ((layer, m), kv) in self.layers.iter().zip(&w.layers).zip(kvs.iter_mut()) {
                layer.attn_norm.apply(&s.x, &mut s.h);
                s.q8.quantize(&s.h);
                s.qkv.resize(m.qkv.rows(), 0.0);
                par_gemv(&m.qkv, &s.q8, 0..m.qkv.rows(), &mut s.qkv);
                if let Some(bias) = &layer.qkv_bias {
                    add_assign(&mut s.qkv, bias);
                }
                let (q, kv_new) = s.qkv.split_at_mut(q_dim);
                let (k, v) = kv_new.split_at_mut(kv_dim);
                if let Some(norm) = &layer.q_norm {
                    norm.apply_each(q);
                }
                if let Some(norm) = &layer.k_norm {
                    norm.apply_each(k);
                }
                shape.rope.apply(q, cos, sin);
                shape.rope.apply(k, cos, sin);
                kv.append(k, v, kv_dim);
                attend(q, kv, shape, &mut s.attn);
                s.q8.quantize(&s.attn);
                s.h.resize(m.wo.rows(), 0.0);
                par_gemv(&m.wo, &s.q8, 0..m.wo.rows(), &mut s.h);
                add_assign(&mut s.x, &s.h);

                layer.ffn_norm.apply(&s.x, &mut s.h);
                s.q8.quantize(&s.h);
                s.gate_up.resize(m.gate_up.rows(), 0.0);
                par_gemv(&m.gate_up, &s.q8, 0..m.gate_up.rows(), &mut s.gate_up);
                let (gate, up) = s.gate_up.split_at(m.gate_up.rows() / 2);
                s.act.clear();
                s.act.extend(
                    gate.iter()
                        .zip(up)
                        .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u),
                );
                s.q8.quantize(&s.act);
                s.h.resize(m.down.rows(), 0.0);
                par_gemv(&m.down, &s.q8, 0..m.down.rows(), &mut s.h);
                add_assign(&mut s.x, &s.h);
            }
            self.norm.apply(&s.x, &mut s.h);
            s.q8.quantize(&s.h);
            par_gemv(&w.output, &s.q8, 0..w.output.rows(), &mut logits);
        });
        *len += 1;
        Ok(logits)
    }
}
