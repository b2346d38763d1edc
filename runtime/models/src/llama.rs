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
//! The maths is candle's: interleaved rotary embeddings (`rope_i`, what llama.cpp's converter
//! prepares Q/K for), RMS norms, SiLU-gated MLP, tied output projection when `output.weight` is
//! absent. `tests/all/tiny.rs` and the tests below check the logits against `quantized_llama`
//! on the same file: the kernels compute candle's integer block products exactly and differ only
//! in the order of the float additions (8 SIMD lanes, partial sums), well within 1e-4.

use std::cmp::Reverse;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::RmsNorm;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, ModelMetadata};
use crate::kernels::{Q8Vector, QMatrix, par_gemv};

/// KV cache growth step in tokens: a session's cache starts this big and grows by this much, so
/// short chats do not reserve a whole context window (188 MB for SmolLM2 at 4096 tokens).
const KV_CHUNK: usize = 256;

/// Where the quantized weights of a matrix live.
enum Quant {
    /// Our kernels (`crate::kernels`): rows `rows` of `matrix`, which may stack the rows of
    /// several weight matrices read by one pass over the same activation (q/k/v, gate/up).
    Own {
        matrix: Arc<QMatrix>,
        rows: Range<usize>,
    },
    /// candle's, for the formats and devices our kernels do not cover.
    Candle(QMatMul),
}

/// A weight matrix: quantized for generation, optionally dense for prompts.
struct Linear {
    quant: Quant,
    /// `(out, in)` `f32` copy for prompt processing; `None` when dense prefill is off or the
    /// stored weights are already `f32` (then `quant` is dense too).
    dense: Option<Tensor>,
}

impl Linear {
    fn candle(q: Arc<QTensor>) -> Result<Self> {
        Ok(Self {
            quant: Quant::Candle(QMatMul::from_arc(q)?),
            dense: None,
        })
    }

    fn own(matrix: Arc<QMatrix>, rows: Range<usize>) -> Self {
        Self {
            quant: Quant::Own { matrix, rows },
            dense: None,
        }
    }

    /// Elements of the quantized weights (0 for float formats).
    fn quantized_elements(&self) -> usize {
        match &self.quant {
            Quant::Own { matrix, rows } => rows.len() * matrix.cols(),
            Quant::Candle(QMatMul::QTensor(q)) => q.shape().elem_count(),
            Quant::Candle(_) => 0,
        }
    }

    /// The `f32` values of the quantized weights, `(out, in)`; `None` for float formats.
    fn dequantize(&self) -> Result<Option<Tensor>> {
        Ok(match &self.quant {
            Quant::Own { matrix, rows } => Some(Tensor::from_vec(
                matrix.dequantize(rows.clone()),
                (rows.len(), matrix.cols()),
                &Device::Cpu,
            )?),
            Quant::Candle(QMatMul::QTensor(q)) => Some(q.dequantize(&q.device())?),
            Quant::Candle(_) => None,
        })
    }

    /// `x`: `(batch, seq, in)` → `(batch, seq, out)`; dense in the prompt phase.
    fn forward(&self, x: &Tensor, phase: Phase) -> Result<Tensor> {
        let (b, seq, k) = x.dims3()?;
        match (&self.dense, &self.quant) {
            (Some(w), _) if phase == Phase::Prompt => {
                let y = x.reshape((b * seq, k))?.matmul(&w.t()?)?;
                Ok(y.reshape((b, seq, ()))?)
            }
            (_, Quant::Candle(q)) => Ok(q.forward(x)?),
            (_, Quant::Own { matrix, rows }) => {
                let xs: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                let n = rows.len();
                let mut out = vec![0f32; b * seq * n];
                if b * seq == 1 {
                    let mut q = Q8Vector::default();
                    q.quantize(&xs);
                    rayon::scope(|_| par_gemv(matrix, &q, rows.clone(), &mut out));
                } else {
                    // One token per task: the rows of a prompt are independent.
                    out.par_chunks_mut(n).zip(xs.par_chunks(k)).for_each_init(
                        Q8Vector::default,
                        |q, (out, x)| {
                            q.quantize(x);
                            matrix.gemv(q, rows.clone(), out);
                        },
                    );
                }
                Ok(Tensor::from_vec(out, (b, seq, n), x.device())?)
            }
        }
    }
}

/// Reads the matrices `names` (same input width). When our kernels read them all, they become
/// row ranges of one stacked matrix, which generation multiplies in one pass.
fn load_stacked(file: &mut GgufFile, names: &[String], device: &Device) -> Result<Vec<Linear>> {
    let tensors = names
        .iter()
        .map(|n| file.tensor(n, device))
        .collect::<Result<Vec<_>>>()?;
    let own = tensors
        .iter()
        .map(QMatrix::from_qtensor)
        .collect::<candle_core::Result<Option<Vec<_>>>>()?;
    let Some(own) = own else {
        return tensors
            .into_iter()
            .map(|t| Linear::candle(Arc::new(t)))
            .collect();
    };
    drop(tensors);
    let sizes: Vec<usize> = own.iter().map(QMatrix::rows).collect();
    match QMatrix::stack(own) {
        Ok(matrix) => {
            let matrix = Arc::new(matrix);
            let mut start = 0;
            Ok(sizes
                .iter()
                .map(|&n| {
                    start += n;
                    Linear::own(matrix.clone(), start - n..start)
                })
                .collect())
        }
        // Mixed formats: each on its own.
        Err(parts) => Ok(parts
            .into_iter()
            .map(|m| {
                let rows = 0..m.rows();
                Linear::own(Arc::new(m), rows)
            })
            .collect()),
    }
}

/// The whole matrix behind `linears` when they are our kernels' and, in order, cover its rows:
/// what one generation-time product computes for all of them.
fn stacked(linears: &[&Linear]) -> Option<Arc<QMatrix>> {
    let mut whole: Option<&Arc<QMatrix>> = None;
    let mut next = 0;
    for linear in linears {
        let Quant::Own { matrix, rows } = &linear.quant else {
            return None;
        };
        if whole.is_some_and(|w| !Arc::ptr_eq(w, matrix)) || rows.start != next {
            return None;
        }
        whole = Some(matrix);
        next = rows.end;
    }
    whole.filter(|w| w.rows() == next).cloned()
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

/// An RMS norm, as a candle module (prompts) and as plain weights (generation).
struct Norm {
    module: RmsNorm,
    weight: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn new(weight: Tensor, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weight.to_dtype(DType::F32)?.to_vec1()?,
            module: RmsNorm::new(weight, eps),
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.module.forward(x)?)
    }

    /// candle's `rms_norm` of one row (partial sums in 8 lanes).
    fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        let sum2 = dot(x, x);
        let m = (sum2 / x.len() as f32 + self.eps).sqrt();
        out.clear();
        out.extend(x.iter().zip(&self.weight).map(|(&v, &w)| v / m * w));
    }
}

struct Layer {
    attn_norm: Norm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
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

/// Shape of the network.
#[derive(Clone, Copy, Debug)]
struct Shape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
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

/// The weights of a llama model. Immutable and shared by every session.
pub(crate) struct Llama {
    shape: Shape,
    /// Shared with `output` when tied.
    embeddings: Embeddings,
    layers: Vec<Layer>,
    norm: Norm,
    output: Linear,
    decode: Option<Decode>,
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

/// A session's KV cache: one per layer, plus the number of positions it holds.
pub(crate) struct LlamaCache {
    layers: Vec<LayerKv>,
    len: usize,
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
        let norm = |file: &mut GgufFile, name: &str| -> Result<Norm> {
            let w = file.tensor(name, device)?.dequantize(device)?;
            Norm::new(w, meta.rms_norm_eps)
        };
        let token_embd = file.tensor("token_embd.weight", device)?;
        let embeddings = match QMatrix::from_qtensor(&token_embd)? {
            Some(m) => Embeddings::Own(Arc::new(m)),
            None => Embeddings::Candle(Arc::new(token_embd)),
        };
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
        let mut layers = Vec::with_capacity(meta.block_count);
        for i in 0..meta.block_count {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
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
            let (wq, wk, wv) = (next(&mut qkv), next(&mut qkv), next(&mut qkv));
            let (wo, down) = (next(&mut wo), next(&mut down));
            let (gate, up) = (next(&mut gate_up), next(&mut gate_up));
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
            decode,
            cos_rows: cos.flatten_all()?.to_vec1()?,
            sin_rows: sin.flatten_all()?.to_vec1()?,
            cos,
            sin,
            device: device.clone(),
        })
    }

    /// An empty KV cache for this model.
    pub(crate) fn new_cache(&self) -> LlamaCache {
        LlamaCache {
            layers: (0..self.layers.len()).map(|_| LayerKv::default()).collect(),
            len: 0,
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
        if let (Phase::Generate, &[token], Some(decode)) = (phase, tokens, &self.decode) {
            return self.decode_token(decode, cache, token);
        }
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
        } = cache;
        s.x = self.embeddings.lookup(&[token], &self.device)?;
        let mut logits = vec![0f32; w.output.rows()];
        rayon::scope(|_| {
            for ((layer, m), kv) in self.layers.iter().zip(&w.layers).zip(kvs.iter_mut()) {
                layer.attn_norm.apply(&s.x, &mut s.h);
                s.q8.quantize(&s.h);
                s.qkv.resize(m.qkv.rows(), 0.0);
                par_gemv(&m.qkv, &s.q8, 0..m.qkv.rows(), &mut s.qkv);
                let (q, kv_new) = s.qkv.split_at_mut(q_dim);
                let (k, v) = kv_new.split_at_mut(kv_dim);
                rope(q, cos, sin);
                rope(k, cos, sin);
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

/// Adds the dense `f32` copies, dequantizing on every core: this is most of the load time
/// (0.25 s of single-threaded work for SmolLM2-135M), and cold starts wait for it.
fn densify(linears: Vec<&mut Linear>) -> Result<()> {
    // Largest first, so that the big output projection does not finish last on its own.
    let mut order: Vec<usize> = (0..linears.len()).collect();
    order.sort_by_key(|&i| Reverse(linears[i].quantized_elements()));
    let threads = candle_core::utils::get_num_threads().clamp(1, linears.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<Option<Tensor>>>>> =
        linears.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let dense = linears[i].dequantize();
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(dense);
                }
            });
        }
    });
    for (linear, result) in linears.into_iter().zip(results) {
        let result = result.into_inner().unwrap_or_else(|e| e.into_inner());
        linear.dense = result.expect("every linear was dequantized")?;
    }
    Ok(())
}

/// Self-attention of one layer over `x` (`(1, seq, dim)`, normed), appending to `kv`.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
fn attention(
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
        .reshape((b, seq, dim))?;
    layer.wo.forward(&y, phase)
}

/// Attention of one generated token: `q` (`heads x head_dim`, rotated) against every cached
/// position of `kv` (this token's included) into `out`; the tensor path's maths. Heads are
/// independent: they split over the rayon pool.
fn attend(q: &mut [f32], kv: &LayerKv, shape: Shape, out: &mut Vec<f32>) {
    let Shape {
        heads,
        kv_heads,
        head_dim,
    } = shape;
    let kv_dim = kv_heads * head_dim;
    let group = heads / kv_heads;
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    out.clear();
    out.resize(heads * head_dim, 0.0);
    q.par_chunks_mut(head_dim)
        .zip(out.par_chunks_mut(head_dim))
        .enumerate()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, (h, (q, out))| {
            let g = h / group;
            q.iter_mut().for_each(|v| *v *= scale);
            scores.clear();
            scores.extend(
                kv.k.chunks_exact(kv_dim)
                    .map(|k| dot(q, &k[g * head_dim..(g + 1) * head_dim])),
            );
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (p, v) in scores.iter().zip(kv.v.chunks_exact(kv_dim)) {
                let p = p / sum;
                let v = &v[g * head_dim..(g + 1) * head_dim];
                out.iter_mut().zip(v).for_each(|(o, &v)| *o += p * v);
            }
        });
}

#[inline]
/// `a . b` with 8 partial sums (vectorizes; the float additions in another order than a
/// sequential sum).
fn dot(a: &[f32], b: &[f32]) -> f32 {
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

fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, &y)| *x += y);
}

/// candle's `rope_i` of one position over every head of `x` (interleaved pairs).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(2 * cos.len()) {
        for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
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

    /// `forward(tokens, phase)` over `steps`: the first as the prompt, the rest generated.
    fn by_step(
        steps: &[&[u32]],
        mut forward: impl FnMut(&[u32], Phase) -> Vec<f32>,
    ) -> Vec<Vec<f32>> {
        steps
            .iter()
            .enumerate()
            .map(|(i, tokens)| {
                let phase = if i == 0 {
                    Phase::Prompt
                } else {
                    Phase::Generate
                };
                forward(tokens, phase)
            })
            .collect()
    }

    fn our_logits(model: &Model, steps: &[&[u32]]) -> Vec<Vec<f32>> {
        let mut cache = model.new_cache();
        by_step(steps, |tokens, phase| {
            model.forward(&mut cache, tokens, phase).unwrap()
        })
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

    /// Generation on plain buffers (`decode_token`) against the tensor path over the same
    /// kernels: the same maths, so equal up to float summation order (attention, norms).
    #[test]
    fn buffer_decode_matches_tensor_decode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyModel::default().write(&path).unwrap();
        let load = || {
            let mut file = crate::gguf::GgufFile::open(&path).unwrap();
            let meta = file.metadata(None, true).unwrap();
            super::Llama::load(&mut file, &meta, &Device::Cpu, true).unwrap()
        };
        let fast = load();
        let mut slow = load();
        assert!(
            fast.decode.is_some(),
            "Q4_1 layers and Q8_0 output use our kernels"
        );
        slow.decode = None;
        let run = |llama: &super::Llama| -> Vec<Vec<f32>> {
            let mut cache = llama.new_cache();
            by_step(STEPS, |tokens, phase| {
                llama.forward(&mut cache, tokens, phase).unwrap()
            })
        };
        let diff = max_diff(&run(&fast), &run(&slow));
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
