//! One model of the pool: its state machine, bounded queue and worker threads (the actors).

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    ChunkFn, EmbedJob, Job, ModelKind, ModelSpec, ModelState, ModelStatus, Prompt, Shared,
};
use crate::batcher::Batcher;
use crate::embed::{EmbeddingModel, Embeddings};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampler::SamplingParams;
use crate::session::{CancelToken, Completion, Session};

/// Why a load failed, kept so every waiter gets a typed error.
#[derive(Clone, Debug)]
pub(super) enum LoadFailure {
    OutOfMemory {
        needed: u64,
        available: u64,
        budget: u64,
    },
    Other(String),
}

impl LoadFailure {
    pub(super) fn to_error(&self, model: &str) -> Error {
        match *self {
            Self::OutOfMemory {
                needed,
                available,
                budget,
            } => Error::OutOfMemory {
                model: model.to_string(),
                needed,
                available,
                budget,
            },
            Self::Other(ref reason) => Error::LoadFailed {
                model: model.to_string(),
                reason: reason.clone(),
            },
        }
    }
}

/// Where the model is.
pub(super) enum Phase {
    Unloaded,
    Loading,
    Loaded(Loaded),
}

/// A loaded model of either kind (cheap to clone: the weights are shared).
#[derive(Clone)]
pub(super) enum Loaded {
    Chat(Model),
    Embedding(EmbeddingModel),
}

/// A queued request.
pub(super) enum Work {
    Generate(Job),
    Embed(EmbedJob),
}

impl Work {
    /// The prompt cache it may use (generations only).
    fn cache_scope(&self) -> Option<&str> {
        match self {
            Work::Generate(job) => Some(&job.cache_scope),
            Work::Embed(_) => None,
        }
    }

    pub(super) fn kind(&self) -> ModelKind {
        match self {
            Work::Generate(_) => ModelKind::Chat,
            Work::Embed(_) => ModelKind::Embedding,
        }
    }

    /// Hands the request its error.
    pub(super) fn fail(self, error: Error) {
        match self {
            Work::Generate(job) => (job.on_done)(Err(error)),
            Work::Embed(job) => (job.on_done)(Err(error)),
        }
    }
}

/// What a worker reports once its session is free again.
enum Outcome {
    Generated(super::DoneFn, Result<Completion>),
    Embedded(super::EmbedDoneFn, Result<Embeddings>),
}

/// Everything about a model that changes, behind one mutex.
pub(super) struct State {
    pub(super) phase: Phase,
    /// Jobs no worker has taken yet.
    pub(super) queue: VecDeque<Work>,
    /// Jobs running on a worker.
    pub(super) busy: usize,
    /// Each free chat worker's session, by worker: the cache scope it holds, and since when it
    /// is free (see `take_job`).
    pub(super) free_scopes: HashMap<usize, (String, Instant)>,
    /// Bumped at every unload: workers of an older generation exit.
    pub(super) generation: u64,
    /// When the model last became idle (or was loaded); the keep-alive clock and LRU order.
    pub(super) idle_since: Instant,
    /// Bytes reserved in the pool's budget.
    pub(super) reserved: u64,
    /// The loaded chat model's batcher, when its sessions step together.
    pub(super) batcher: Option<Arc<Batcher>>,
    /// What the batchers of earlier loads ran: (passes, session steps).
    pub(super) batched_before: (u64, u64),
    pub(super) attempts: u64,
    pub(super) loads: u64,
    pub(super) unloads: u64,
    pub(super) last_load_duration: Option<Duration>,
    /// The failure of load attempt number `.0`.
    pub(super) last_error: Option<(u64, LoadFailure)>,
    pub(super) shutdown: bool,
}

impl State {
    /// Drops the batcher (it holds the weights too), keeping its counts.
    pub(super) fn drop_batcher(&mut self) {
        if let Some(b) = self.batcher.take() {
            let stats = b.stats();
            self.batched_before.0 += stats.steps;
            self.batched_before.1 += stats.session_steps;
        }
    }

    /// Loaded with nothing running or waiting: may be unloaded.
    pub(super) fn is_idle_loaded(&self) -> bool {
        matches!(self.phase, Phase::Loaded(_)) && self.busy == 0 && self.queue.is_empty()
    }
}

/// Moves an unloaded model to `Loading`; the caller starts the (single) loader thread for the
/// returned attempt once it has released the lock.
pub(super) fn start_load(st: &mut State) -> u64 {
    st.phase = Phase::Loading;
    st.attempts += 1;
    st.attempts
}

pub(crate) struct Entry {
    pub(super) spec: ModelSpec,
    state: Mutex<State>,
    /// Signals queue and phase changes to workers and `load` waiters.
    pub(super) changed: Condvar,
}

impl Entry {
    pub(super) fn new(spec: ModelSpec) -> Self {
        Self {
            spec,
            state: Mutex::new(State {
                phase: Phase::Unloaded,
                queue: VecDeque::new(),
                busy: 0,
                free_scopes: HashMap::new(),
                generation: 0,
                idle_since: Instant::now(),
                reserved: 0,
                batcher: None,
                batched_before: (0, 0),
                attempts: 0,
                loads: 0,
                unloads: 0,
                last_load_duration: None,
                last_error: None,
                shutdown: false,
            }),
            changed: Condvar::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it, and none of our critical sections
        // calls user code; keep serving with the state as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn notify(&self) {
        self.changed.notify_all();
    }

    /// The loaded chat model, if any.
    pub(super) fn loaded_model(&self) -> Option<Model> {
        match &self.lock().phase {
            Phase::Loaded(Loaded::Chat(model)) => Some(model.clone()),
            _ => None,
        }
    }

    /// The loaded embedding model, if any.
    pub(super) fn loaded_embedding(&self) -> Option<EmbeddingModel> {
        match &self.lock().phase {
            Phase::Loaded(Loaded::Embedding(model)) => Some(model.clone()),
            _ => None,
        }
    }

    pub(super) fn status(&self) -> ModelStatus {
        let st = self.lock();
        let batch = st.batcher.as_ref().map(|b| b.stats()).unwrap_or_default();
        let state = match st.phase {
            Phase::Unloaded => ModelState::Unloaded,
            Phase::Loading => ModelState::Loading,
            Phase::Loaded(_) if st.busy > 0 || !st.queue.is_empty() => ModelState::Busy,
            Phase::Loaded(_) => ModelState::Idle,
        };
        ModelStatus {
            name: self.spec.name.clone(),
            kind: self.spec.kind,
            state,
            memory_bytes: st.reserved,
            busy_sessions: st.busy,
            parallel: self.spec.parallel,
            queued: st.queue.len(),
            loads: st.loads,
            unloads: st.unloads,
            last_load_duration: st.last_load_duration,
            last_error: st
                .last_error
                .as_ref()
                .map(|(_, f)| f.to_error(&self.spec.name).to_string()),
            batched_steps: st.batched_before.0 + batch.steps,
            batched_session_steps: st.batched_before.1 + batch.session_steps,
        }
    }

    /// Fails queued jobs with `ShuttingDown` and lets the workers exit after their current job.
    pub(super) fn shutdown(&self) {
        let jobs: Vec<Work> = {
            let mut st = self.lock();
            st.shutdown = true;
            st.queue.drain(..).collect()
        };
        self.notify();
        for job in jobs {
            job.fail(Error::ShuttingDown(self.spec.name.clone()));
        }
    }

    /// Starts the worker threads of a freshly loaded model. Returns false if the OS refused.
    pub(super) fn spawn_workers(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        model: &Loaded,
        generation: u64,
    ) -> bool {
        // Several sessions of a chat model step together (see `crate::batcher`).
        let batcher = match model {
            Loaded::Chat(m) if self.spec.parallel > 1 => Some(Batcher::new(m.clone())),
            _ => None,
        };
        self.lock().batcher = batcher.clone();
        for i in 0..self.spec.parallel {
            let (entry, shared, model) = (self.clone(), shared.clone(), model.clone());
            let batcher = batcher.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("slmfn-{}-{i}", self.spec.name))
                .spawn(move || entry.work(&shared, model, batcher, i, generation));
            if spawned.is_err() {
                return false;
            }
        }
        true
    }

    /// A worker: owns one session (chat models), takes jobs until its generation is unloaded.
    fn work(
        &self,
        shared: &Shared,
        model: Loaded,
        batcher: Option<Arc<Batcher>>,
        me: usize,
        generation: u64,
    ) {
        let mut session = match (&model, batcher) {
            (Loaded::Chat(model), Some(batcher)) => Some(model.batched_session(batcher)),
            (Loaded::Chat(model), None) => Some(model.session()),
            (Loaded::Embedding(_), _) => None,
        };
        let mut scope = String::new();
        loop {
            let job = {
                let mut st = self.lock();
                loop {
                    if st.shutdown || st.generation != generation {
                        st.free_scopes.remove(&me);
                        return;
                    }
                    if session.is_some() {
                        st.free_scopes
                            .entry(me)
                            .or_insert_with(|| (scope.clone(), Instant::now()));
                    }
                    if let Some(job) = take_job(&mut st, me, &scope) {
                        st.free_scopes.remove(&me);
                        st.busy += 1;
                        if !st.queue.is_empty() {
                            // Free workers that left the rest to this one decide again.
                            self.notify();
                        }
                        break job;
                    }
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            if let Some(s) = job.cache_scope() {
                s.clone_into(&mut scope);
            }
            let outcome = match (job, &mut session, &model) {
                (Work::Generate(job), Some(session), _) => {
                    session.set_cache_scope(&job.cache_scope);
                    let result =
                        self.run(session, job.prompt, job.params, job.cancel, job.on_chunk);
                    Outcome::Generated(job.on_done, result)
                }
                (Work::Embed(job), _, Loaded::Embedding(model)) => {
                    let result = self.run_embed(model, job.texts, &job.cancel);
                    Outcome::Embedded(job.on_done, result)
                }
                // `submit` checks the kind; this is a bug.
                (job, _, _) => {
                    let error = Error::Internal(format!(
                        "a {} job reached the {} model `{}`",
                        job.kind(),
                        self.spec.kind,
                        self.spec.name
                    ));
                    match job {
                        Work::Generate(job) => Outcome::Generated(job.on_done, Err(error)),
                        Work::Embed(job) => Outcome::Embedded(job.on_done, Err(error)),
                    }
                }
            };
            if let Some(session) = &mut session {
                // Also after a panic in the middle of a generation.
                session.leave_batch();
            }
            // Free the session before reporting, so that a caller who submits again as soon as
            // it has its answer finds the model idle (not overloaded, not busy).
            let mut st = self.lock();
            st.busy -= 1;
            let idle = st.busy == 0 && st.queue.is_empty();
            if idle {
                st.idle_since = Instant::now();
            }
            drop(st);
            if idle {
                shared.reaper.wake();
            }
            match outcome {
                Outcome::Generated(on_done, result) => on_done(result),
                Outcome::Embedded(on_done, result) => on_done(result),
            }
        }
    }

    fn run_embed(
        &self,
        model: &EmbeddingModel,
        texts: Vec<String>,
        cancel: &CancelToken,
    ) -> Result<Embeddings> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled(self.spec.name.clone()));
        }
        std::panic::catch_unwind(AssertUnwindSafe(|| model.embed(&texts))).unwrap_or_else(|_| {
            Err(Error::Internal(format!(
                "embedding on model `{}` panicked",
                self.spec.name
            )))
        })
    }

    fn run(
        &self,
        session: &mut Session,
        prompt: Prompt,
        params: Option<SamplingParams>,
        cancel: CancelToken,
        mut on_chunk: ChunkFn,
    ) -> Result<Completion> {
        let params = params.unwrap_or_else(|| self.spec.defaults.clone());
        // A panic is a bug (ours or the caller's callback): report it to this caller and keep
        // the worker serving, rather than leaving the model busy for ever.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            let model = session.model().clone();
            let tokens = match prompt {
                Prompt::Chat(messages) => model.encode_chat(&messages)?,
                Prompt::Text(text) => model.encode_prompt(&text)?,
                Prompt::Tokens(tokens) => tokens,
                Prompt::Tools(request) => {
                    return crate::tool_select::generate(
                        session,
                        &request,
                        &params,
                        &cancel,
                        |chunk| on_chunk(chunk),
                    );
                }
            };
            session.generate(&tokens, &params, &cancel, |chunk| on_chunk(chunk))
        }))
        .unwrap_or_else(|_| {
            Err(Error::Internal(format!(
                "generation on model `{}` panicked",
                self.spec.name
            )))
        })
    }
}

/// The queued job worker `me` takes, whose session holds `scope`'s prompt (prompt-cache
/// affinity): the first job of its own scope; else the first job whose scope no other free
/// session holds (that one takes it), when `me` is, of the free workers whose scope no queued
/// job wants, the one idle longest (its cache the least recently used); else `None` — another
/// free worker, woken like this one, takes it.
fn take_job(st: &mut State, me: usize, scope: &str) -> Option<Work> {
    if let Some(at) = st
        .queue
        .iter()
        .position(|w| w.cache_scope().is_none_or(|s| s == scope))
    {
        return st.queue.remove(at);
    }
    let held = |s: &str, by: usize| st.free_scopes.get(&by).is_some_and(|(h, _)| h == s);
    let at = st.queue.iter().position(|w| {
        w.cache_scope()
            .is_some_and(|s| !st.free_scopes.keys().any(|&o| o != me && held(s, o)))
    })?;
    let wanted = |held: &str| st.queue.iter().any(|w| w.cache_scope() == Some(held));
    let longest_idle = st
        .free_scopes
        .iter()
        .filter(|(_, (held, _))| !wanted(held))
        .min_by_key(|&(&w, &(_, since))| (since, w))
        .map(|(&w, _)| w);
    match longest_idle {
        Some(w) if w != me => None,
        _ => st.queue.remove(at),
    }
}
