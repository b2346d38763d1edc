//! The llama forward pass (SmolLM, Llama 2/3 and other llama-architecture GGUFs).
//!
//! Written here instead of using candle-transformers' `quantized_llama::ModelWeights`, whose
//! fields are private, for what a server needs:
//!
//! - **Dense prefill.** Prompts run through `f32` copies of the weight matrices (one GEMM per
//!   layer), generation through the quantized ones (memory-bound GEMV). Besides being several
//!   times faster for prompts, this makes the first token exact: candle's quantized kernels
//!   quantize activations to 8 bits, and with SmolLM2-135M Q4_1 that noise alone flips the first
//!   token of "What is the capital of France?" from "The" to "L" (logits 24.62 vs 24.90, where
//!   the exact values are 25.33 vs 25.24), and the model then answers in broken French.
//! - **A KV cache that grows in place** (candle-nn's `KvCache`, `slice_set` into chunks) instead
//!   of a `Tensor::cat` of the whole cache at every token.
//! - **Grouped-query attention without copying K/V**: the query heads that share a KV head are
//!   stacked as rows of one matrix product.
//! - **The trained context window**, where `quantized_llama` stops at `MAX_SEQ_LEN` = 4096
//!   rotary positions, and no per-(length, position) mask cache that grows for ever.
//! - **Quantized token embeddings** (rows dequantized on lookup) instead of an `f32` table.
//!
//! The maths is candle's: interleaved rotary embeddings (`rope_i`, what llama.cpp's converter
//! prepares Q/K for), RMS norms, SiLU-gated MLP, tied output projection when `output.weight` is
//! absent. `tests/all/tiny.rs` checks the logits against `quantized_llama` on the same file.

use candle_core::quantized::{QMatMul, QTensor};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::RmsNorm;
use candle_nn::kv_cache::KvCache;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, ModelMetadata};

/// KV cache growth step in tokens: a session's cache starts this big and grows by this much, so
/// short chats do not reserve a whole context window (188 MB for SmolLM2 at 4096 tokens).
const KV_CHUNK: usize = 256;

/// A weight matrix: quantized for generation, optionally dense for prompts.
struct Linear {
    quantized: QMatMul,
    /// `(out, in)` `f32` copy for prompt processing; `None` when dense prefill is off or the
    /// stored weights are already `f32` (then `quantized` is dense too).
    dense: Option<Tensor>,
}

impl Linear {
    fn load(file: &mut GgufFile, name: &str, device: &Device) -> Result<Self> {
        Self::new(Arc::new(file.tensor(name, device)?))
    }

    /// Quantized only; [`densify`] adds the dense copies.
    fn new(q: Arc<QTensor>) -> Result<Self> {
        Ok(Self {
            quantized: QMatMul::from_arc(q)?,
            dense: None,
        })
    }

    /// The quantized tensor, if the weights are quantized (`QMatMul` keeps float formats as
    /// plain tensors).
    fn source(&self) -> Option<&Arc<QTensor>> {
        match &self.quantized {
            QMatMul::QTensor(q) => Some(q),
            _ => None,
        }
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`; dense in the prompt phase.
    fn forward(&self, x: &Tensor, phase: Phase) -> Result<Tensor> {
        let (b, seq, k) = x.dims3()?;
        match &self.dense {
            Some(w) if phase == Phase::Prompt => {
                let y = x.reshape((b * seq, k))?.matmul(&w.t()?)?;
                Ok(y.reshape((b, seq, ()))?)
            }
            _ => Ok(self.quantized.forward(x)?),
        }
    }
}

/// Which weights a forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Processing the prompt: dense weights when loaded (compute-bound GEMMs, exact logits for
    /// the first token).
    Prompt,
    /// Generating: quantized weights (memory-bound GEMVs).
    Generate,
}

struct Layer {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// Shape of the network.
#[derive(Clone, Copy, Debug)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The weights of a llama model. Immutable and shared by every session.
pub(crate) struct Llama {
    shape: Shape,
    /// Token embeddings, looked up quantized (shared with `output` when tied).
    embeddings: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    /// `(context_length, head_dim / 2)` rotary tables.
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

/// A session's KV cache: one per layer, plus the number of positions it holds.
pub(crate) struct LlamaCache {
    layers: Vec<KvCache>,
    len: usize,
}

impl LlamaCache {
    /// Forgets every position and frees the tensors.
    pub(crate) fn reset(&mut self) {
        for kv in &mut self.layers {
            kv.reset();
        }
        self.len = 0;
    }
}

impl Llama {
    /// Reads the weights of a llama GGUF. With `dense`, also keeps `f32` copies of the matrices
    /// for prompt processing (see the module docs).
    pub(crate) fn load(
        file: &mut GgufFile,
        meta: &ModelMetadata,
        device: &Device,
        dense: bool,
    ) -> Result<Self> {
        let head_dim = meta.embedding_length / meta.head_count;
        if meta.rope_dimension != head_dim {
            return Err(Error::invalid_model(
                file.path(),
                format!(
                    "partial rotary embeddings ({} of {head_dim} dims) are not supported",
                    meta.rope_dimension
                ),
            ));
        }
        let norm = |file: &mut GgufFile, name: &str| -> Result<RmsNorm> {
            let w = file.tensor(name, device)?.dequantize(device)?;
            Ok(RmsNorm::new(w, meta.rms_norm_eps))
        };
        let embeddings = Arc::new(file.tensor("token_embd.weight", device)?);
        let mut output = if file.has_tensor("output.weight") {
            Linear::load(file, "output.weight", device)?
        } else {
            // Tied: the output projection is the embedding matrix (shared, not copied).
            Linear::new(embeddings.clone())?
        };
        let mut layers = Vec::with_capacity(meta.block_count);
        for i in 0..meta.block_count {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            let mut linear = |n: &str| Linear::load(file, &name(n), device);
            let (wq, wk, wv, wo) = (
                linear("attn_q")?,
                linear("attn_k")?,
                linear("attn_v")?,
                linear("attn_output")?,
            );
            let (gate, up, down) = (linear("ffn_gate")?, linear("ffn_up")?, linear("ffn_down")?);
            layers.push(Layer {
                attn_norm: norm(file, &name("attn_norm"))?,
                wq,
                wk,
                wv,
                wo,
                ffn_norm: norm(file, &name("ffn_norm"))?,
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
        let (cos, sin) = rotary_tables(meta.context_length, head_dim, meta.rope_freq_base, device)?;
        Ok(Self {
            shape: Shape {
                heads: meta.head_count,
                kv_heads: meta.head_count_kv,
                head_dim,
            },
            embeddings,
            layers,
            norm: norm(file, "output_norm.weight")?,
            output,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// An empty KV cache for this model.
    pub(crate) fn new_cache(&self) -> LlamaCache {
        LlamaCache {
            layers: (0..self.layers.len())
                .map(|_| KvCache::new(2, KV_CHUNK))
                .collect(),
            len: 0,
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
        let seq = tokens.len();
        let pos = cache.len;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embeddings.embedding(&ids)?.unsqueeze(0)?;
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
}

/// Adds the dense `f32` copies, dequantizing on every core: this is most of the load time
/// (0.25 s of single-threaded work for SmolLM2-135M), and cold starts wait for it.
fn densify(mut linears: Vec<&mut Linear>) -> Result<()> {
    let sources: Vec<Arc<QTensor>> = linears.iter().filter_map(|l| l.source().cloned()).collect();
    // Largest first, so that the big output projection does not finish last on its own.
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sources[i].shape().elem_count()));
    let threads = candle_core::utils::get_num_threads().clamp(1, sources.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Tensor>>>> =
        sources.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let dense = sources[i].dequantize(&sources[i].device());
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(dense.map_err(Into::into));
                }
            });
        }
    });
    let mut results = results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or_else(|e| e.into_inner()));
    for linear in linears.iter_mut().filter(|l| l.source().is_some()) {
        let dense = results
            .next()
            .flatten()
            .expect("every source was dequantized")?;
        linear.dense = Some(dense);
    }
    Ok(())
}

/// Self-attention of one layer over `x` (`(1, seq, dim)`, normed), appending to `kv`.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn attention(
    layer: &Layer,
    shape: Shape,
    kv: &mut KvCache,
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
    } = shape;
    let (b, seq, dim) = x.dims3()?;
    let split = |t: Tensor, n: usize| -> Result<Tensor> {
        Ok(t.reshape((b, seq, n, head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let q = split(layer.wq.forward(x, phase)?, heads)?;
    let k = split(layer.wk.forward(x, phase)?, kv_heads)?;
    let v = split(layer.wv.forward(x, phase)?, kv_heads)?;
    let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
    let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
    // (b, kv_heads, positions, head_dim), views into the cache.
    let (k, v) = kv.append(&k, &v)?;
    let positions = k.dim(2)?;
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
    let y = probs.matmul(&v.contiguous()?)?;
    let y = y
        .reshape((b, heads, seq, head_dim))?
        .transpose(1, 2)?
        .reshape((b, seq, dim))?;
    layer.wo.forward(&y, phase)
}

/// Additive causal mask `(seq, pos + seq)`: query `i` (at position `pos + i`) sees keys up to
/// its own position.
fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let keys = pos + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..keys).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, keys), device)?)
}

/// `cos` and `sin` of `position x base^(-2i/head_dim)`, as candle's `precomput_freqs_cis`.
fn rotary_tables(
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
    //! The forward pass against candle-transformers' `quantized_llama` on the same files.

    use std::path::Path;

    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_llama::ModelWeights;

    use super::Phase;
    use crate::testing::TinyModel;
    use crate::{LoadOptions, Model};

    /// Logits after each step of `steps` (first the prompt, then one token at a time).
    fn candle_logits(path: &Path, steps: &[&[u32]]) -> Vec<Vec<f32>> {
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut weights = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
        let mut pos = 0;
        steps
            .iter()
            .map(|tokens| {
                let x = Tensor::new(*tokens, &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap();
                let logits = weights.forward(&x, pos).unwrap();
                pos += tokens.len();
                logits.squeeze(0).unwrap().to_vec1().unwrap()
            })
            .collect()
    }

    fn our_logits(model: &Model, steps: &[&[u32]]) -> Vec<Vec<f32>> {
        let mut cache = model.new_cache();
        steps
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let phase = if i == 0 {
                    Phase::Prompt
                } else {
                    Phase::Generate
                };
                model.forward(&mut cache, tokens, phase).unwrap()
            })
            .collect()
    }

    fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| {
                assert_eq!(x.len(), y.len());
                x.iter().zip(y).map(|(p, q)| (p - q).abs())
            })
            .fold(0.0, f32::max)
    }

    const STEPS: &[&[u32]] = &[&[1, 40, 50, 60, 70, 80, 90, 100, 110], &[120], &[130], &[7]];

    /// Rewrites a GGUF with every tensor dequantized to `f32`: candle then runs it dense.
    fn write_f32_copy(src: &Path, dst: &Path) {
        let mut file = std::fs::File::open(src).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut tensors = Vec::new();
        for name in content.tensor_infos.keys() {
            let q = content.tensor(&mut file, name, &Device::Cpu).unwrap();
            let f = q.dequantize(&Device::Cpu).unwrap();
            let f = candle_core::quantized::QTensor::quantize(
                &f,
                candle_core::quantized::GgmlDType::F32,
            )
            .unwrap();
            tensors.push((name.clone(), f));
        }
        let metadata: Vec<_> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let tensors: Vec<_> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = std::fs::File::create(dst).unwrap();
        gguf_file::write(&mut out, &metadata, &tensors).unwrap();
    }

    #[test]
    fn quantized_forward_matches_candle_quantized_llama() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyModel::default().write(&path).unwrap();
        let options = LoadOptions {
            dense_prefill: false,
            ..LoadOptions::default()
        };
        let model = Model::load_with(&path, &options).unwrap();
        let diff = max_diff(&our_logits(&model, STEPS), &candle_logits(&path, STEPS));
        assert!(diff < 1e-4, "max |logit difference| {diff}");
    }

    #[test]
    fn dense_prompt_matches_candle_on_f32_weights() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyModel::default().write(&path).unwrap();
        let f32_path = dir.path().join("tiny-f32.gguf");
        write_f32_copy(&path, &f32_path);
        let model = Model::load(&path).unwrap();
        let ours = our_logits(&model, &STEPS[..1]);
        let exact = candle_logits(&f32_path, &STEPS[..1]);
        let diff = max_diff(&ours, &exact);
        assert!(diff < 1e-4, "max |logit difference| {diff}");
        // The quantized kernels are measurably further from the exact logits.
        let quantized = candle_logits(&path, &STEPS[..1]);
        assert!(max_diff(&quantized, &exact) > 10.0 * diff.max(1e-6));
    }
}
