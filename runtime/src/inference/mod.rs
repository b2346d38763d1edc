//! The async face of the warm model pool, shared by the runtime's adapters (the WIT
//! `inference` interface and the OpenAI-compatible API): which model a call uses
//! ([`Inference::choose`], the one place those rules live), generations
//! ([`Inference::start`]) and embeddings ([`Inference::embed`]).
//!
//! The pool runs generation on its own worker threads and reports through callbacks; this
//! module turns that into channels a tokio task can await, never blocking an async worker.
//! Dropping a [`Generation`] cancels it (the caller went away). Every generation that
//! finishes is recorded in the service's [`GenerationMetrics`] (tokens, time to first token),
//! whichever adapter started it.
//!
//! # Layout
//!
//! - this module: [`Inference`], [`Generation`], [`SamplingOverrides`];
//! - `choice`: [`Inference::choose`] with its [`Asker`] and [`ChoiceError`].

mod choice;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use slmfn_models::pool::PoolStats;
use slmfn_models::tool_select::{self, Technique};
use slmfn_models::{
    CancelToken, Completion, EmbedJob, Embeddings, Grammar, Job, ModelKind, ModelPool, ModelStatus,
    Prompt, SamplingParams,
};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::GenerationMetrics;

pub use choice::{Asker, ChoiceError};

pub use slmfn_models::Error as ModelError;

/// The process-wide inference service.
pub struct Inference {
    pool: Arc<ModelPool>,
    /// The chat model used when neither the call nor the manifest names one.
    default_model: Option<String>,
    /// The embedding model used when neither the call nor the manifest names one.
    default_embedding_model: Option<String>,
    /// Where finished generations are counted.
    metrics: Arc<GenerationMetrics>,
    /// The embeddings of tools' route texts ([`tool_select::route_text`]) by the default
    /// embedding model: the same tools come with every request of an agent.
    route_cache: std::sync::Mutex<std::collections::HashMap<String, Arc<[f32]>>>,
}

/// How many route texts [`Inference::route`] keeps embedded (emptied when full).
const ROUTE_CACHE_ENTRIES: usize = 4096;

/// A call's changes to a model's default sampling, shared by the adapters: each field set
/// replaces the default, `stop` adds to the model's stop strings, `max_tokens_cap` bounds the
/// result (a manifest budget).
#[derive(Clone, Debug, Default)]
pub struct SamplingOverrides {
    /// Most tokens to generate.
    pub max_tokens: Option<usize>,
    /// An upper bound on `max_tokens`, whether defaulted or requested.
    pub max_tokens_cap: Option<usize>,
    /// Softmax temperature (`0`: greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<usize>,
    /// Penalty on recently seen tokens.
    pub repeat_penalty: Option<f32>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Extra stop strings.
    pub stop: Vec<String>,
    /// A constraint on the output (JSON schema, Lark grammar, regex).
    pub grammar: Option<Grammar>,
}

/// A generation in progress: its text chunks and its final result.
pub struct Generation {
    chunks: mpsc::UnboundedReceiver<String>,
    done: Option<oneshot::Receiver<Result<Completion, ModelError>>>,
    model: String,
    cancel: CancelToken,
    metrics: Arc<GenerationMetrics>,
    submitted: Instant,
    /// The outcome was counted in `metrics` (else dropping counts a cancellation).
    recorded: bool,
    /// The deployed function it is for, metered per function.
    function: Option<Arc<str>>,
}

impl Inference {
    /// Wraps a pool; `default_model` is the default chat model.
    pub fn new(pool: Arc<ModelPool>, default_model: Option<String>) -> Self {
        Self {
            pool,
            default_model,
            default_embedding_model: None,
            metrics: Arc::default(),
            route_cache: Default::default(),
        }
    }

    /// Sets the default embedding model.
    pub fn with_default_embedding_model(mut self, model: Option<String>) -> Self {
        self.default_embedding_model = model;
        self
    }

    /// The generation metrics (registered by [`crate::metrics::Metrics`]).
    pub fn metrics(&self) -> &GenerationMetrics {
        &self.metrics
    }

    /// The pool, for the metrics collector; routes use the operations below.
    pub(crate) fn pool(&self) -> &Arc<ModelPool> {
        &self.pool
    }

    /// Every served model with its state, in name order.
    pub fn status(&self) -> Vec<ModelStatus> {
        self.pool.status()
    }

    /// The pool's memory use, budget and counters.
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// When each served model's file was last modified (seconds since the epoch; 0 when
    /// unknown), read on a blocking thread.
    pub async fn file_times(&self) -> HashMap<String, u64> {
        let files: Vec<(String, std::path::PathBuf)> = self
            .pool
            .status()
            .into_iter()
            .filter_map(|s| Some((s.name.clone(), self.pool.spec(&s.name).ok()?.path.clone())))
            .collect();
        tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|(name, path)| {
                    let secs = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    (name, secs)
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// Loads `model` if it is not loaded, on a blocking thread, and returns once it is ready.
    pub async fn load(&self, model: &str) -> Result<(), ModelError> {
        let pool = self.pool.clone();
        let model = model.to_string();
        tokio::task::spawn_blocking(move || pool.load(&model))
            .await
            .unwrap_or_else(|e| Err(ModelError::Internal(format!("the load task failed: {e}"))))
    }

    /// Unloads `model` if it is idle: `Ok(false)` while it is in use.
    pub fn unload(&self, model: &str) -> Result<bool, ModelError> {
        self.pool.unload(model)
    }

    /// The runtime's default (chat) model.
    pub fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// The runtime's default embedding model.
    pub fn default_embedding_model(&self) -> Option<&str> {
        self.default_embedding_model.as_deref()
    }

    /// The kind of the model of this name (`None`: no such model).
    pub fn kind(&self, model: &str) -> Option<ModelKind> {
        self.pool.kind(model).ok()
    }

    /// The names of the served models of `kind`, sorted.
    pub fn models_of_kind(&self, kind: ModelKind) -> Vec<String> {
        self.pool
            .status()
            .into_iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.name)
            .collect()
    }

    /// Embeds `texts` with the embedding model `model` on the pool's workers (never on this
    /// task's thread). `ModelNotFound`, `WrongModelKind` (a chat model) and `Overloaded` come
    /// at once; a request still queued at `deadline` is dropped with `Cancelled`. Dropping the
    /// future drops the request too if it has not started. Counted in the metrics, for
    /// `function` too when a deployed function asked.
    pub async fn embed(
        &self,
        model: &str,
        function: Option<&str>,
        texts: Vec<String>,
        deadline: Option<Instant>,
    ) -> Result<Embeddings, ModelError> {
        let submitted = Instant::now();
        /// Cancels the job when the caller's future is dropped.
        struct CancelOnDrop(CancelToken);
        impl Drop for CancelOnDrop {
            fn drop(&mut self) {
                self.0.cancel();
            }
        }
        let cancel = deadline.map_or_else(CancelToken::new, CancelToken::with_deadline);
        let (done_tx, done) = oneshot::channel();
        self.pool.submit_embed(
            model,
            EmbedJob {
                texts,
                cancel: cancel.clone(),
                on_done: Box::new(move |result| {
                    let _ = done_tx.send(result);
                }),
            },
        )?;
        let _guard = CancelOnDrop(cancel);
        let result = done
            .await
            .unwrap_or_else(|_| Err(ModelError::ShuttingDown(model.to_string())));
        self.metrics
            .record_embedding(model, function, &result, submitted.elapsed());
        result
    }

    /// For a [`Prompt::Tools`] request with [`Technique::Routed`]: each tool's similarity to
    /// the last user message by the default embedding model (unit vectors: the dot product),
    /// which the tool choice weighs with its name scores. Without an embedding model, or when
    /// embedding fails (logged), the request is left as it is and the choice is by scores.
    pub async fn route(&self, function: Option<&str>, prompt: &mut Prompt) {
        let Prompt::Tools(request) = prompt else {
            return;
        };
        if request.technique != Technique::Routed || request.similarity.is_some() {
            return;
        }
        let Some(model) = self.default_embedding_model.as_deref() else {
            return;
        };
        let routes: Vec<String> = request.tools.iter().map(tool_select::route_text).collect();
        let cached = |cache: &std::collections::HashMap<String, Arc<[f32]>>| -> Vec<_> {
            routes.iter().map(|r| cache.get(r).cloned()).collect()
        };
        let known = cached(&self.route_cache.lock().unwrap_or_else(|e| e.into_inner()));
        let mut texts = vec![request.user_text().to_string()];
        texts.extend(
            routes
                .iter()
                .zip(&known)
                .filter(|(_, k)| k.is_none())
                .map(|(r, _)| r.clone()),
        );
        let embeddings = match self.embed(model, function, texts, None).await {
            Ok(e) => e.vectors,
            Err(e) => {
                tracing::warn!(model, error = %e, "tool routing: embedding failed");
                return;
            }
        };
        let mut fresh = embeddings.into_iter();
        let Some(query) = fresh.next() else {
            return;
        };
        let mut cache = self.route_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() + routes.len() > ROUTE_CACHE_ENTRIES {
            cache.clear();
        }
        let mut similarity = Vec::with_capacity(routes.len());
        for (route, known) in routes.into_iter().zip(known) {
            let vector = match known {
                Some(v) => v,
                None => {
                    let Some(v) = fresh.next() else { return };
                    let v: Arc<[f32]> = v.into();
                    cache.insert(route, v.clone());
                    v
                }
            };
            similarity.push(vector.iter().zip(&query).map(|(a, b)| a * b).sum());
        }
        request.similarity = Some(similarity);
    }

    /// The model's default sampling parameters.
    pub fn defaults(&self, model: &str) -> Result<SamplingParams, ModelError> {
        Ok(self.pool.spec(model)?.defaults.clone())
    }

    /// The model's defaults with a call's overrides applied, validated (`InvalidInput` names
    /// the offending field).
    pub fn sampling(
        &self,
        model: &str,
        overrides: &SamplingOverrides,
    ) -> Result<SamplingParams, ModelError> {
        let mut s = self.defaults(model)?;
        if let Some(v) = overrides.max_tokens {
            s.max_tokens = v;
        }
        if let Some(cap) = overrides.max_tokens_cap {
            s.max_tokens = s.max_tokens.min(cap);
        }
        if let Some(v) = overrides.temperature {
            s.temperature = v;
        }
        if let Some(v) = overrides.top_p {
            s.top_p = v;
        }
        if let Some(v) = overrides.top_k {
            s.top_k = v;
        }
        if let Some(v) = overrides.repeat_penalty {
            s.repeat_penalty = v;
        }
        if overrides.seed.is_some() {
            s.seed = overrides.seed;
        }
        s.stop.extend(overrides.stop.iter().cloned());
        if overrides.grammar.is_some() {
            s.grammar = overrides.grammar.clone();
        }
        s.validate()?;
        Ok(s)
    }

    /// Queues a generation. Fails at once with `ModelNotFound` or `Overloaded`; later errors
    /// arrive through [`Generation::finish`]. The generation stops at `deadline`. It may reuse
    /// the cached prompt prefix of an earlier generation of the same `cache_scope` only (see
    /// `slmfn_models::pool::Job::cache_scope`).
    pub fn start(
        &self,
        model: &str,
        cache_scope: &str,
        prompt: Prompt,
        params: SamplingParams,
        deadline: Option<Instant>,
    ) -> Result<Generation, ModelError> {
        let submitted = Instant::now();
        let cancel = deadline.map_or_else(CancelToken::new, CancelToken::with_deadline);
        let (chunk_tx, chunks) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        self.pool.submit(
            model,
            Job {
                prompt,
                cache_scope: cache_scope.to_string(),
                params: Some(params),
                cancel: cancel.clone(),
                on_chunk: Box::new(move |chunk| {
                    let _ = chunk_tx.send(chunk.to_string());
                }),
                on_done: Box::new(move |result| {
                    let _ = done_tx.send(result);
                }),
            },
        )?;
        Ok(Generation {
            chunks,
            done: Some(done),
            model: model.to_string(),
            cancel,
            metrics: self.metrics.clone(),
            submitted,
            recorded: false,
            function: None,
        })
    }
}

impl Generation {
    /// Meters this generation's usage for a deployed function too.
    pub fn for_function(mut self, function: Arc<str>) -> Self {
        self.function = Some(function);
        self
    }

    /// The next chunk of text, or `None` when the generation is over.
    pub async fn next_chunk(&mut self) -> Option<String> {
        self.chunks.recv().await
    }

    /// Waits for the final result (the chunks need not have been read).
    pub async fn finish(&mut self) -> Result<Completion, ModelError> {
        let done = self.done.take().ok_or_else(|| {
            ModelError::InvalidInput("the generation's result was already taken".into())
        })?;
        let result = done
            .await
            .unwrap_or_else(|_| Err(ModelError::ShuttingDown(self.model.clone())));
        self.metrics.record_generation(
            &self.model,
            self.function.as_deref(),
            &result,
            self.submitted.elapsed(),
            self.deadline_passed(),
        );
        self.recorded = true;
        result
    }

    /// Whether the deadline given to [`Inference::start`] has passed.
    pub fn deadline_passed(&self) -> bool {
        self.cancel.deadline_passed()
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Harmless once finished; stops the worker when the caller gave up early.
        self.cancel.cancel();
        if !self.recorded {
            self.metrics.record_cancelled(&self.model);
        }
    }
}
