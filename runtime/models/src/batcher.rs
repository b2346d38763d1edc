//! Batched generation for concurrent sessions (continuous batching): the sessions of one
//! model step together, each forward pass running the next tokens of every session in one pass
//! over the weights (a matrix product over their rows, each with its own KV cache and
//! positions), where alone each would read all the weights for its one token.
//!
//! - **Who steps together.** A session becomes a *member* at its first forward pass of a
//!   generation (or scoring) and leaves when that ends ([`Session::leave_batch`]); sessions
//!   join and leave between steps. A step runs once every member waits on one: the last to
//!   arrive runs it on the rayon pool (one compute pool for all sessions, sized to the cores;
//!   the sessions' own threads only sample and stream) and hands every member its logits. A
//!   member that is late by more than [`STRAGGLER`] (a blocking stream callback, a starved
//!   thread) misses that step and goes into the next: the others never wait for it longer.
//! - **Prefill in chunks.** While others are members, a prompt is fed [`SHARED_PREFILL_CHUNK`]
//!   tokens per step, so a long prompt delays the others' next token by one chunk's time, not
//!   the whole prompt's.
//! - **Batching changes no answer.** Each step gets the bits it would get alone (see
//!   `crate::llama`'s row path): a greedy answer is the same whatever runs next to it, and
//!   batch composition shows only in timing. A failed step is retried alone for each member,
//!   so one session's error is not the others'.
//!
//! [`Session::leave_batch`]: crate::Session::leave_batch

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::llama::{LlamaCache, Phase, Step};
use crate::model::Model;

/// How long a step waits for a member that has not sent its next token, counted from the
/// first arrival: long enough for sampling and a grammar's token mask, short enough that a
/// member stuck in a callback costs the others little.
pub const STRAGGLER: Duration = Duration::from_millis(50);

/// Prompt tokens per step while other sessions are members: a 32-token chunk of SmolLM2-135M
/// costs about what 8 generated tokens do on 2 cores.
pub const SHARED_PREFILL_CHUNK: usize = 32;

/// Counters of a batcher, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Forward passes run.
    pub steps: u64,
    /// Session steps they ran (a pass of 3 sessions counts 3).
    pub session_steps: u64,
    /// The most sessions one pass ran.
    pub widest: usize,
}

/// The batching point of one loaded model's sessions.
pub struct Batcher {
    model: Model,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    members: usize,
    waiting: Vec<Request>,
    running: bool,
    done: HashMap<u64, Finished>,
    next: u64,
    stats: BatchStats,
}

/// A step's cache, handed back, and its logits.
type Finished = (LlamaCache, Result<Vec<f32>>);

/// A member's step, with its cache moved in while it runs.
struct Request {
    id: u64,
    cache: LlamaCache,
    tokens: Vec<u32>,
    phase: Phase,
    since: Instant,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// A batcher for the sessions of `model` ([`Model::batched_session`]).
    pub fn new(model: Model) -> Arc<Self> {
        Arc::new(Self {
            model,
            state: Mutex::new(State {
                members: 0,
                waiting: Vec::new(),
                running: false,
                done: HashMap::new(),
                next: 0,
                stats: BatchStats::default(),
            }),
            changed: Condvar::new(),
        })
    }

    /// The model whose sessions step here.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What it has run so far.
    pub fn stats(&self) -> BatchStats {
        self.lock().stats
    }

    /// Sessions in a generation now.
    pub fn members(&self) -> usize {
        self.lock().members
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under the lock; a poisoned one holds consistent counters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn join(self: &Arc<Self>) -> Member {
        self.lock().members += 1;
        Member(self.clone())
    }

    /// Runs `tokens` after `cache` in the next step with the other members; returns the last
    /// token's logits. The caller is a member ([`Self::join`]).
    pub(crate) fn step(
        &self,
        cache: &mut LlamaCache,
        tokens: &[u32],
        phase: Phase,
    ) -> Result<Vec<f32>> {
        let mut st = self.lock();
        let id = st.next;
        st.next += 1;
        st.waiting.push(Request {
            id,
            cache: std::mem::take(cache),
            tokens: tokens.to_vec(),
            phase,
            since: Instant::now(),
        });
        loop {
            if let Some((back, result)) = st.done.remove(&id) {
                *cache = back;
                return result;
            }
            if st.running || st.waiting.is_empty() {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let waited = st.waiting[0].since.elapsed();
            if st.waiting.len() < st.members && waited < STRAGGLER {
                st = self
                    .changed
                    .wait_timeout(st, STRAGGLER - waited)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            let batch = std::mem::take(&mut st.waiting);
            st.running = true;
            st.stats.steps += 1;
            st.stats.session_steps += batch.len() as u64;
            st.stats.widest = st.stats.widest.max(batch.len());
            drop(st);
            let finished = self.run(batch);
            st = self.lock();
            st.running = false;
            st.done.extend(finished);
            self.changed.notify_all();
        }
    }

    /// One forward pass of every request; a failure is retried alone for each, so that it is
    /// only its own.
    fn run(&self, mut batch: Vec<Request>) -> Vec<(u64, Finished)> {
        let together = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut steps: Vec<Step<'_>> = batch
                .iter_mut()
                .map(|r| Step {
                    cache: &mut r.cache,
                    tokens: &r.tokens,
                    phase: r.phase,
                })
                .collect();
            self.model.forward_steps(&mut steps)
        }));
        let results: Vec<Result<Vec<f32>>> = match together {
            Ok(Ok(logits)) => logits.into_iter().map(Ok).collect(),
            _ if batch.len() > 1 => batch
                .iter_mut()
                .map(|r| {
                    // A failed pass may leave some layers a step ahead.
                    r.cache.mend();
                    std::panic::catch_unwind(AssertUnwindSafe(|| {
                        self.model.forward(&mut r.cache, &r.tokens, r.phase)
                    }))
                    .unwrap_or_else(|_| Err(self.panicked()))
                })
                .collect(),
            Ok(Err(e)) => vec![Err(e)],
            Err(_) => vec![Err(self.panicked())],
        };
        batch
            .into_iter()
            .zip(results)
            .map(|(mut r, result)| {
                if result.is_err() {
                    r.cache.mend();
                }
                (r.id, (r.cache, result))
            })
            .collect()
    }

    fn panicked(&self) -> Error {
        Error::Internal(format!(
            "a forward pass of `{}` panicked",
            self.model.path().display()
        ))
    }
}

/// Membership of a session in its batcher's steps; leaves on drop.
pub(crate) struct Member(Arc<Batcher>);

impl Member {
    pub(crate) fn batcher(&self) -> &Batcher {
        &self.0
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.0.lock().members -= 1;
        // The waiting members may now be all there is.
        self.0.changed.notify_all();
    }
}
