//! The warm model pool: every model the process may serve, loaded on demand and shared by all
//! callers.
//!
//! - **Specs.** Each model has a [`ModelSpec`] (from [`crate::spec`]): its [`ModelKind`] (a chat model: a GGUF
//!   file; an embedding model: a sentence-transformers directory or zip, see [`crate::embed`]),
//!   file, context window, default sampling, [`KeepAlive`], `preload`, `parallel` sessions and
//!   `queue_depth`.
//! - **Two kinds of work.** A [`Job`] generates text on a chat model ([`ModelPool::submit`]);
//!   an [`EmbedJob`] embeds texts on an embedding model ([`ModelPool::submit_embed`]). Both go
//!   through the same queue, admission, loading, keep-alive and eviction; a job sent to a model
//!   of the other kind is refused at once with [`Error::WrongModelKind`]. An embedding model's
//!   workers share its weights and need no session: `parallel` is how many batches run at
//!   once.
//! - **Single-flight loading.** The first request for a cold model starts one load on a loader
//!   thread; requests arriving meanwhile queue behind it. Weights are shared by all sessions.
//! - **Actors.** A loaded model runs `parallel` worker threads, each owning one [`Session`]
//!   (weights shared, KV cache private). With `parallel > 1` the sessions step together
//!   through one [`crate::batcher::Batcher`] (one pass over the weights per step for all of
//!   them, answers unchanged), and a free worker takes the queued job of the cache scope its
//!   session holds first (prompt-cache affinity; see `entry::take_job`). Requests wait in a
//!   bounded per-model queue; a request that finds `parallel` running and `queue_depth`
//!   waiting gets [`Error::Overloaded`] at once.
//!   Generation never runs on the caller's thread: [`ModelPool::submit`] only enqueues, so async
//!   callers may call it from an executor thread. The queue is a `VecDeque` under the model's
//!   mutex with a condition variable rather than an `mpsc` channel: admission has to count
//!   running and waiting requests together (also while the model is still loading, before any
//!   worker exists), and shutdown and failed loads must hand every queued request its error.
//! - **Memory budget.** A model reserves its weights plus the KV caches of its sessions at full
//!   context before loading (an embedding model: its f32 weights plus the activations of
//!   `parallel` batches of [`crate::embed::BATCH_TOKENS`] tokens). When the budget is short, idle models are unloaded least recently
//!   used first; a model with running or queued requests is never evicted. If evicting every
//!   idle model is not enough, the load fails with [`Error::OutOfMemory`].
//! - **Keep-alive.** An idle model unloads after its `keep_alive` (`0`: right after use;
//!   [`KeepAlive::Forever`]: only when evicted for memory). A reaper thread does it.
//!
//! Lock order: the pool's memory lock before any model's state lock; never the reverse.
//!
//! [`Session`]: crate::Session

#[cfg(test)]
mod embed_tests;
mod entry;
mod loader;
mod reaper;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::embed::Embeddings;
use crate::error::{Error, Result};
use crate::kind::ModelKind;
use crate::message::Message;
use crate::sampler::SamplingParams;
use crate::session::{CancelToken, Completion};
use crate::spec::{KeepAlive, ModelSpec};
use crate::tool_select::ToolRequest;
use entry::{Entry, Work};

/// Pool-wide settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Bytes all loaded models together may use (weights plus full-context KV caches).
    pub memory_budget: u64,
    /// The `Retry-After` hint of [`Error::Overloaded`].
    pub retry_after: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            memory_budget: 8 << 30,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What to generate from.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Raw text to continue (special-token text is not parsed).
    Text(String),
    /// Token ids as is.
    Tokens(Vec<u32>),
    /// A conversation that may call tools: the tool is chosen first, its arguments drawn
    /// from the conversation (see [`crate::tool_select`]). The params' own grammar is ignored.
    Tools(Box<ToolRequest>),
}

/// Called with each streamed chunk of text, on a worker thread.
pub type ChunkFn = Box<dyn FnMut(&str) + Send>;
/// Called once with the outcome, on a worker or loader thread.
pub type DoneFn = Box<dyn FnOnce(Result<Completion>) + Send>;

/// A generation request.
pub struct Job {
    /// The input.
    pub prompt: Prompt,
    /// Whose prompt cache this job may use: a session reuses the prefix of its previous prompt
    /// only for a job of the same scope, and forgets it for any other (the runtime passes the
    /// function's name, or `/v1` for the OpenAI-compatible API). Reuse shows in the usage and
    /// in timing, so callers that must not learn about each other's prompts need scopes of
    /// their own.
    pub cache_scope: String,
    /// Sampling; `None` takes the model's defaults.
    pub params: Option<SamplingParams>,
    /// Set it to stop the generation (caller gone, deadline passed); queued jobs that are
    /// cancelled finish without running.
    pub cancel: CancelToken,
    /// Receives the streamed text.
    pub on_chunk: ChunkFn,
    /// Receives the completion or the error. Always called exactly once after a successful
    /// [`ModelPool::submit`].
    pub on_done: DoneFn,
}

/// Called once with the vectors, on a worker or loader thread.
pub type EmbedDoneFn = Box<dyn FnOnce(Result<Embeddings>) + Send>;

/// An embedding request.
pub struct EmbedJob {
    /// The texts, embedded in one call (batched and padded by the model).
    pub texts: Vec<String>,
    /// Set it to drop the request while it waits (caller gone, deadline passed): it then
    /// finishes with [`Error::Cancelled`] without running.
    pub cancel: CancelToken,
    /// Receives the vectors or the error. Always called exactly once after a successful
    /// [`ModelPool::submit_embed`].
    pub on_done: EmbedDoneFn,
}

impl std::fmt::Debug for EmbedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedJob")
            .field("texts", &self.texts.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("prompt", &self.prompt)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Where a model is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Not in memory.
    Unloaded,
    /// A load is in progress.
    Loading,
    /// Loaded, no request running or queued.
    Idle,
    /// Loaded and serving.
    Busy,
}

impl ModelState {
    /// The snake_case name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Idle => "idle",
            Self::Busy => "busy",
        }
    }
}

/// A snapshot of one model for admin listings and metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// The model's name.
    pub name: String,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// Its state.
    pub state: ModelState,
    /// Bytes reserved in the budget (0 when unloaded).
    pub memory_bytes: u64,
    /// Sessions running a request.
    pub busy_sessions: usize,
    /// Sessions configured.
    pub parallel: usize,
    /// Requests waiting for a session.
    pub queued: usize,
    /// Loads completed since the pool started.
    pub loads: u64,
    /// Unloads (keep-alive, eviction or admin) since the pool started.
    pub unloads: u64,
    /// How long the last successful load took.
    pub last_load_duration: Option<Duration>,
    /// Why the last load failed, if it did.
    pub last_error: Option<String>,
    /// Forward passes its batched sessions ran (`parallel > 1`, see [`crate::batcher`]) since
    /// the pool started.
    #[serde(default)]
    pub batched_steps: u64,
    /// The session steps those passes ran: over `batched_steps`, the mean batch width.
    #[serde(default)]
    pub batched_session_steps: u64,
}

/// Pool-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStats {
    /// Bytes reserved by loaded (or loading) models.
    pub memory_used: u64,
    /// The budget.
    pub memory_budget: u64,
    /// Requests that found their model loaded.
    pub hits: u64,
    /// Requests that had to wait for a load.
    pub misses: u64,
    /// Idle models unloaded to make room.
    pub evictions: u64,
    /// Requests refused with `Overloaded`.
    pub rejected: u64,
}

/// The pool. Cheap to clone; the last clone dropped shuts the workers down.
#[derive(Clone)]
pub struct ModelPool {
    handle: Arc<Handle>,
}

/// Owner of the shared state: dropping it (with the last `ModelPool`) shuts everything down.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// State shared by the pool handles, loader, worker and reaper threads.
pub(crate) struct Shared {
    config: PoolConfig,
    entries: HashMap<String, Arc<Entry>>,
    /// Bytes reserved by models; also the lock taken before any entry's to evict.
    memory: std::sync::Mutex<u64>,
    counters: std::sync::Mutex<PoolStats>,
    reaper: reaper::Reaper,
}

impl std::fmt::Debug for ModelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPool")
            .field(
                "models",
                &self.handle.shared.entries.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ModelPool {
    /// A pool serving `specs`. Loads nothing; see [`Self::preload`].
    pub fn new(config: PoolConfig, specs: Vec<ModelSpec>) -> Result<Self> {
        let mut entries = HashMap::new();
        for spec in specs {
            if spec.parallel == 0 {
                return Err(Error::InvalidInput(format!(
                    "model `{}`: parallel must be at least 1",
                    spec.name
                )));
            }
            spec.defaults.validate().map_err(|e| {
                Error::InvalidInput(format!("model `{}` default sampling: {e}", spec.name))
            })?;
            let name = spec.name.clone();
            if entries
                .insert(name.clone(), Arc::new(Entry::new(spec)))
                .is_some()
            {
                return Err(Error::InvalidInput(format!(
                    "model `{name}` is listed twice"
                )));
            }
        }
        let shared = Arc::new(Shared {
            counters: std::sync::Mutex::new(PoolStats {
                memory_budget: config.memory_budget,
                ..PoolStats::default()
            }),
            config,
            entries,
            memory: std::sync::Mutex::new(0),
            reaper: reaper::Reaper::default(),
        });
        reaper::start(&shared);
        Ok(Self {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    fn entry(&self, model: &str) -> Result<&Arc<Entry>> {
        self.shared()
            .entries
            .get(model)
            .ok_or_else(|| Error::ModelNotFound(model.to_string()))
    }

    /// Queues `job` on `model`, starting a load if the model is cold. Never blocks on a load or
    /// a generation: safe to call from an async executor. Errors (`ModelNotFound`,
    /// `Overloaded`) are returned here and `job.on_done` is then not called; every later
    /// outcome, load failures included, goes to `job.on_done`.
    /// `WrongModelKind` for an embedding model.
    pub fn submit(&self, model: &str, job: Job) -> Result<()> {
        let entry = self.entry(model)?;
        entry.submit(self.shared(), Work::Generate(job))
    }

    /// Queues an embedding `job` on `model`, like [`Self::submit`]: never blocks; errors
    /// returned here (`ModelNotFound`, `WrongModelKind` for a chat model, `Overloaded`) mean
    /// `job.on_done` is not called.
    pub fn submit_embed(&self, model: &str, job: EmbedJob) -> Result<()> {
        let entry = self.entry(model)?;
        entry.submit(self.shared(), Work::Embed(job))
    }

    /// Submits an embedding job and waits for the vectors: a blocking convenience over
    /// [`Self::submit_embed`] (do not call it on an async executor thread).
    pub fn embed(
        &self,
        model: &str,
        texts: Vec<String>,
        cancel: CancelToken,
    ) -> Result<Embeddings> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit_embed(
            model,
            EmbedJob {
                texts,
                cancel,
                on_done: Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            },
        )?;
        rx.recv()
            .unwrap_or_else(|_| Err(Error::ShuttingDown(model.to_string())))
    }

    /// The kind of `model`.
    pub fn kind(&self, model: &str) -> Result<ModelKind> {
        Ok(self.entry(model)?.spec.kind)
    }

    /// Submits a job and waits for its completion: a blocking convenience over
    /// [`Self::submit`] (do not call it on an async executor thread). Its calls share one
    /// prompt-cache scope.
    pub fn generate(
        &self,
        model: &str,
        prompt: Prompt,
        params: Option<SamplingParams>,
        cancel: CancelToken,
        on_chunk: impl FnMut(&str) + Send + 'static,
    ) -> Result<Completion> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(
            model,
            Job {
                prompt,
                cache_scope: String::new(),
                params,
                cancel,
                on_chunk: Box::new(on_chunk),
                on_done: Box::new(move |result| {
                    let _ = tx.send(result);
                }),
            },
        )?;
        rx.recv()
            .unwrap_or_else(|_| Err(Error::ShuttingDown(model.to_string())))
    }

    /// Loads `model` if needed and waits until it is ready (admin "load", readiness).
    pub fn load(&self, model: &str) -> Result<()> {
        let entry = self.entry(model)?;
        entry.load_and_wait(self.shared())
    }

    /// Loads every model marked `preload`, in turn. The process is ready when this returns Ok.
    pub fn preload(&self) -> Result<()> {
        let mut names: Vec<&String> = self
            .shared()
            .entries
            .iter()
            .filter(|(_, e)| e.spec.preload)
            .map(|(name, _)| name)
            .collect();
        names.sort();
        for name in names {
            self.load(name)?;
        }
        Ok(())
    }

    /// Unloads `model` now if it is idle. Returns whether it was unloaded (false: not loaded, or
    /// in use).
    pub fn unload(&self, model: &str) -> Result<bool> {
        let entry = self.entry(model)?;
        Ok(loader::unload_if_idle(self.shared(), entry, |_| true))
    }

    /// The spec of `model`.
    pub fn spec(&self, model: &str) -> Result<&ModelSpec> {
        Ok(&self.entry(model)?.spec)
    }

    /// A loaded chat `model`'s handle (tokenizer, template, metadata), if it is loaded (`None`
    /// for an embedding model).
    pub fn loaded(&self, model: &str) -> Result<Option<crate::Model>> {
        Ok(self.entry(model)?.loaded_model())
    }

    /// A loaded embedding `model`'s handle, if it is loaded (`None` for a chat model).
    pub fn loaded_embedding(&self, model: &str) -> Result<Option<crate::EmbeddingModel>> {
        Ok(self.entry(model)?.loaded_embedding())
    }

    /// Every model's status, sorted by name.
    pub fn status(&self) -> Vec<ModelStatus> {
        let mut all: Vec<ModelStatus> =
            self.shared().entries.values().map(|e| e.status()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Pool-wide counters.
    pub fn stats(&self) -> PoolStats {
        let mut stats = *self.shared().counters.lock().expect("counters lock");
        stats.memory_used = *self.shared().memory.lock().expect("memory lock");
        stats
    }
}

impl Shared {
    fn count(&self, f: impl FnOnce(&mut PoolStats)) {
        f(&mut self.counters.lock().expect("counters lock"));
    }

    /// Stops the reaper and every worker; queued jobs get `ShuttingDown`.
    fn shutdown(&self) {
        self.reaper.stop();
        for entry in self.entries.values() {
            entry.shutdown();
        }
    }
}

/// How long until `instant + keep_alive` (None: never).
fn expires_in(since: Instant, keep_alive: KeepAlive, now: Instant) -> Option<Duration> {
    match keep_alive {
        KeepAlive::Forever => None,
        KeepAlive::For(d) => Some((since + d).saturating_duration_since(now)),
    }
}
