//! # slmfn-models
//!
//! The model core of slmfn: loads quantized GGUF language models with candle, builds their
//! tokenizer and chat template from the GGUF metadata, samples tokens and streams text; and
//! embeds texts with BERT sentence-transformers models (all-MiniLM-L6-v2). It knows nothing of
//! HTTP or WebAssembly; the runtime's adapters translate to and from it.
//!
//! # Layout
//!
//! - [`gguf`]: the GGUF header, typed [`ModelMetadata`], reading tensors.
//! - [`tokenizer`]: the byte-level BPE [`Tokenizer`] rebuilt from `tokenizer.ggml.*` metadata.
//! - [`template`]: the [`ChatTemplate`] from `tokenizer.chat_template` (minijinja), ChatML fallback.
//! - [`sampler`]: [`SamplingParams`] and the [`Sampler`] (temperature, top-k, top-p, repeat
//!   penalty, seed).
//! - `stop`: stop strings over streamed text (holds back partial matches).
//! - [`constraint`]: constrained decoding (llguidance): a [`Grammar`] (JSON schema, Lark,
//!   regex) as a token mask before each sampled token, forced tokens appended unsampled.
//! - `kernels`: quantized matrix-vector products for generation and batched matrix products
//!   for prompts (`Q4_1`, `Q8_0`; AVX2, AVX-512 VNNI where present, a scalar fallback), and
//!   the batch-invariant dense products of the opt-in `f32` prefill.
//! - `llama`: the llama-family forward pass (llama, qwen2, qwen3) over shared weights and a
//!   per-session KV cache (quantized prefill and generation).
//! - [`tool_call`]: tool calling for templates without tool support: tools in the system
//!   prompt, the answer constrained to a call or text, read back as [`tool_call::ToolAnswer`].
//! - [`tool_select`]: tool calls a small model gets right: candidates by feasibility,
//!   arguments constrained to the user's spans, the tool chosen by calibrated name scores.
//! - [`model`]: a loaded [`Model`] (weights shared behind an `Arc`).
//! - [`embed`]: a loaded [`EmbeddingModel`] (BERT from `config.json`, `tokenizer.json`,
//!   `model.safetensors`, in a directory or a zip): batched, padded, mean-pooled,
//!   L2-normalized [`Embeddings`]; texts past 512 tokens are refused, not truncated.
//! - [`session`]: a [`Session`] owns a KV cache (and keeps its last prompt's, the prompt
//!   cache) and runs the generation loop into a [`Completion`].
//! - [`kind`]: [`ModelKind`], chat or embedding.
//! - [`spec`]: a [`ModelSpec`], one model the pool can serve, and its [`KeepAlive`].
//! - [`pool`]: the warm [`ModelPool`]: specs of either [`ModelKind`], single-flight loads,
//!   per-model worker threads (each owning a session for chat models), bounded queues,
//!   keep-alive, LRU eviction under a memory budget.
//! - [`source`]: where model files come from ([`ModelSource`]: local path, `hf://`,
//!   `pypi://`), the [`Catalog`] of named, digest-pinned [`ModelEntry`]s (default `smollm2`;
//!   `minilm`, the embedding model), and the [`ModelCache`] that pulls, verifies and keeps
//!   them.
//! - [`device`]: CPU, or CUDA with the `cuda` feature.
//! - [`error`]: the [`Error`] enum and its policy.
//! - `testing` (feature `test-util`): a tiny random llama, qwen2 or qwen3 written as a real
//!   GGUF file;
//!   `embed::testing`: a tiny random BERT written as real sentence-transformers files.
//!
//! Data flows one way: `ModelPool` → `Model` (gguf → tokenizer, template, weights) → `Session`
//! (sampler, stop) → `Completion`; `ModelPool` → `EmbeddingModel` → `Embeddings`.
//!
//! # Example
//!
//! ```no_run
//! use slmfn_models::{CancelToken, Message, Model, SamplingParams};
//!
//! let model = Model::load("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let prompt = model.encode_chat(&[Message::user("What is the capital of France?")])?;
//! let mut session = model.session();
//! let completion = session.generate(
//!     &prompt,
//!     &SamplingParams::greedy(64),
//!     &CancelToken::new(),
//!     |chunk| print!("{chunk}"),
//! )?;
//! println!("\n{:?} after {} tokens", completion.finish_reason, completion.usage.completion_tokens);
//! # Ok::<(), slmfn_models::Error>(())
//! ```

pub mod batcher;
mod chat_prompt;
pub mod constraint;
pub mod device;
pub mod embed;
pub mod error;
pub mod gguf;
mod kernels;
pub mod kind;
mod llama;
mod mapped;
pub mod message;
pub mod model;
pub mod pool;
pub mod sampler;
pub mod session;
pub mod source;
pub mod spec;
mod stop;
pub mod template;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tokenizer;
pub mod tool_call;
pub mod tool_select;

pub use constraint::Grammar;

/// The instruction set our CPU kernels use in this process: `avx2+avx512vnni`, `avx2` or
/// `scalar` (the best the CPU has, capped by `SLMFN_KERNELS=avx2|scalar`).
pub fn cpu_kernels() -> &'static str {
    kernels::isa().name()
}
pub use embed::{EmbeddingModel, Embeddings};
pub use error::{Error, ErrorClass, Result};
pub use gguf::ModelMetadata;
pub use kind::ModelKind;
pub use message::{Message, ToolCall};
pub use model::{LoadOptions, Model};
pub use pool::{EmbedJob, Job, ModelPool, ModelState, ModelStatus, PoolConfig, Prompt};
pub use sampler::{Sampler, SamplingParams};
pub use session::{CancelToken, Completion, FinishReason, Session, Usage};
pub use source::{
    CachedModel, Catalog, ModelCache, ModelEntry, ModelSource, ModelsFile, PullOptions, SourceError,
};
pub use spec::{KeepAlive, ModelSpec};
pub use template::ChatTemplate;
pub use tokenizer::Tokenizer;
