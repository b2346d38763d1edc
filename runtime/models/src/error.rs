//! Errors of the model core.
//!
//! Policy: every expected failure is a variant of [`Error`] carrying what a caller needs to act
//! (the path, the limit, the offending value). Callers at the boundaries map variants to their own
//! vocabulary: `InvalidInput`, `WrongModelKind` and `ContextLengthExceeded` are the caller's
//! fault (HTTP 400, WIT `invalid-input` / `context-length-exceeded`), `Overloaded` is retryable (HTTP 429 with
//! `Retry-After`), `ModelNotFound` is 404, the load errors are the operator's problem. A panic in
//! this crate is a bug. `anyhow` is for examples and tests only.

use std::path::PathBuf;
use std::time::Duration;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a model operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a usable GGUF model (corrupt, truncated, missing metadata or tensors).
    #[error("invalid model file {path}: {reason}")]
    InvalidModel {
        /// The file we tried to load.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The GGUF declares an architecture this crate cannot run.
    #[error("unsupported model architecture `{architecture}` (supported: {supported})")]
    UnsupportedArchitecture {
        /// `general.architecture` from the file.
        architecture: String,
        /// The architectures we can run, comma separated.
        supported: &'static str,
    },

    /// The tokenizer could not be built from the GGUF metadata, or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The chat template does not compile or failed to render (including `raise_exception`).
    #[error("chat template: {0}")]
    Template(String),

    /// A request parameter or input is invalid (bad sampling value, empty prompt, unknown token).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The prompt plus the requested completion do not fit the model's context window.
    #[error(
        "context length exceeded: {prompt_tokens} prompt tokens + {max_tokens} max tokens > \
         context length {context_length}"
    )]
    ContextLengthExceeded {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Completion tokens requested.
        max_tokens: usize,
        /// The usable context window of the loaded model.
        context_length: usize,
    },

    /// A forward pass failed inside candle (a bug or resource exhaustion, not bad input).
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),

    /// The model exists but is of the wrong kind for the call: generation on an embedding
    /// model, or embedding with a chat model. The caller's fault (HTTP 400, WIT
    /// `invalid-input`).
    #[error("model `{model}` is {} model: it cannot {}", kind.article_name(), wanted.verb())]
    WrongModelKind {
        /// The model named.
        model: String,
        /// What it is.
        kind: crate::kind::ModelKind,
        /// What the call needs.
        wanted: crate::kind::ModelKind,
    },

    /// The request was cancelled (caller gone, or its deadline passed) before it ran.
    #[error("the request on model `{0}` was cancelled before it ran")]
    Cancelled(String),

    /// The pool knows no model by this name.
    #[error("model not found: `{0}`")]
    ModelNotFound(String),

    /// The model's request queue is full; retry after the hinted delay.
    ///
    /// At most `parallel` requests run per model and `queue_depth` more wait; beyond that the
    /// pool refuses at once rather than letting latency grow without bound.
    #[error("model `{model}` is overloaded; retry after {}s", retry_after.as_secs().max(1))]
    Overloaded {
        /// The model whose queue is full.
        model: String,
        /// A hint for the caller (HTTP `Retry-After`).
        retry_after: Duration,
    },

    /// The model does not fit in the pool's memory budget even after evicting every idle model.
    #[error(
        "model `{model}` needs {needed} bytes but only {available} of the {budget}-byte memory \
         budget can be freed (models in use are never evicted)"
    )]
    OutOfMemory {
        /// The model that could not be loaded.
        model: String,
        /// Its estimated resident size (weights plus KV caches of its sessions).
        needed: u64,
        /// What is free or freeable right now.
        available: u64,
        /// The pool's budget.
        budget: u64,
    },

    /// Loading the model failed; the next request for it tries again.
    #[error("model `{model}` failed to load: {reason}")]
    LoadFailed {
        /// The model that failed to load.
        model: String,
        /// The load error, as text (shared by every request that was waiting for the load).
        reason: String,
    },

    /// A bug: a panic during generation, caught so the worker keeps serving.
    #[error("internal error: {0}")]
    Internal(String),

    /// The pool shut down while the request was queued or running.
    #[error("model `{0}` is shutting down")]
    ShuttingDown(String),
}

impl Error {
    pub(crate) fn invalid_model(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::InvalidModel {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// What kind of failure this is: the one classification that every boundary (HTTP
    /// statuses, WIT error cases) translates, so they cannot disagree.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::ModelNotFound(_) => ErrorClass::NotFound,
            Self::Overloaded { retry_after, .. } => ErrorClass::Overloaded(*retry_after),
            Self::InvalidInput(_)
            | Self::Tokenizer(_)
            | Self::Template(_)
            | Self::WrongModelKind { .. } => ErrorClass::InvalidInput,
            Self::ContextLengthExceeded { .. } => ErrorClass::ContextLengthExceeded,
            Self::Cancelled(_) => ErrorClass::Timeout,
            Self::ShuttingDown(_) | Self::OutOfMemory { .. } => ErrorClass::Unavailable,
            Self::Io { .. }
            | Self::InvalidModel { .. }
            | Self::UnsupportedArchitecture { .. }
            | Self::Inference(_)
            | Self::LoadFailed { .. }
            | Self::Internal(_) => ErrorClass::Internal,
        }
    }
}

/// The classes of [`Error`] ([`Error::class`]), each with its answer at the boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// No model by that name (HTTP 404, WIT `model-not-found`).
    NotFound,
    /// The model's queue is full: retry after this long (HTTP 429 with `Retry-After`, WIT
    /// `overloaded`).
    Overloaded(Duration),
    /// The caller's request is wrong: a bad value, a prompt that does not tokenize or render,
    /// a model of the other kind (HTTP 400, WIT `invalid-input`). The message is for the caller.
    InvalidInput,
    /// The prompt plus the completion do not fit the context window (HTTP 400, WIT
    /// `context-length-exceeded`).
    ContextLengthExceeded,
    /// The request's deadline passed before it ran, or its caller went away (HTTP 504, WIT
    /// `timeout`).
    Timeout,
    /// The model cannot serve now: the pool is shutting down, or the model does not fit the
    /// memory budget while others are in use (HTTP 503, WIT `unavailable`).
    Unavailable,
    /// The operator's problem or a bug: a file that does not load, a failed forward pass
    /// (HTTP 500 with the details in the log only, WIT `runtime`).
    Internal,
}
