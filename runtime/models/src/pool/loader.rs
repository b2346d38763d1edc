//! Loading (single-flight, on a loader thread), the memory budget and unloading; and the
//! entry points that start a load (a job for a cold model, an explicit load).

use std::sync::Arc;
use std::time::Instant;

use super::entry::{Entry, LoadFailure, Loaded, Phase, State, Work, start_load};
use super::{ModelKind, Shared};
use crate::embed::{EmbeddingHeader, EmbeddingModel};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{LoadOptions, Model};

/// Starts the loader thread of load attempt `attempt`.
pub(super) fn spawn(shared: Arc<Shared>, entry: Arc<Entry>, attempt: u64) {
    let name = format!("slmfn-load-{}", entry.spec.name);
    let (s, e) = (shared.clone(), entry.clone());
    if std::thread::Builder::new()
        .name(name)
        .spawn(move || load(&s, &e, attempt))
        .is_err()
    {
        fail(
            &entry,
            attempt,
            LoadFailure::Other("cannot start a loader thread".into()),
        );
    }
}

/// Reserves memory (evicting idle models), loads the weights, starts the workers.
fn load(shared: &Arc<Shared>, entry: &Arc<Entry>, attempt: u64) {
    let started = Instant::now();
    let spec = &entry.spec;
    let loaded = (|| -> Result<Loaded, LoadFailure> {
        let other = |e: Error| LoadFailure::Other(e.to_string());
        if spec.kind == ModelKind::Embedding {
            // The config and the safetensors header give the size before any weight is read.
            let header = EmbeddingHeader::read(&spec.path).map_err(other)?;
            let needed = header.weights_bytes
                + spec.parallel as u64 * EmbeddingModel::activation_bytes(&header);
            reserve(shared, entry, needed)?;
            let device = crate::device::default_device();
            return EmbeddingModel::load_with(&spec.path, &device)
                .map(Loaded::Embedding)
                .map_err(|e| {
                    release(shared, entry);
                    other(e)
                });
        }
        // The header alone gives the size, so memory is made before reading any weights.
        let header = GgufFile::open(&spec.path).map_err(other)?;
        header.ensure_supported().map_err(other)?;
        let meta = header
            .metadata(spec.context_length, spec.dense_prefill)
            .map_err(other)?;
        drop(header);
        let sessions = (spec.parallel as u64).saturating_mul(meta.session_bytes());
        let needed = meta.weights_bytes.saturating_add(sessions);
        reserve(shared, entry, needed)?;
        let options = LoadOptions {
            context_length: spec.context_length,
            dense_prefill: spec.dense_prefill,
            ..LoadOptions::default()
        };
        Model::load_with(&spec.path, &options)
            .map(Loaded::Chat)
            .map_err(|e| {
                release(shared, entry);
                other(e)
            })
    })();
    let model = match loaded {
        Ok(loaded) => loaded,
        Err(failure) => return fail(entry, attempt, failure),
    };
    let mut st = entry.lock();
    if st.shutdown {
        st.phase = Phase::Unloaded;
        drop(st);
        release(shared, entry);
        return;
    }
    st.phase = Phase::Loaded(model.clone());
    st.loads += 1;
    st.last_load_duration = Some(started.elapsed());
    st.last_error = None;
    st.idle_since = Instant::now();
    let generation = st.generation;
    let idle = st.queue.is_empty();
    drop(st);
    if !entry.spawn_workers(shared, &model, generation) {
        let mut st = entry.lock();
        st.phase = Phase::Unloaded;
        st.drop_batcher();
        st.generation += 1;
        drop(st);
        release(shared, entry);
        return fail(
            entry,
            attempt,
            LoadFailure::Other("cannot start worker threads".into()),
        );
    }
    entry.notify();
    if idle {
        shared.reaper.wake();
    }
}

/// Marks attempt `attempt` failed and fails every queued job with it.
fn fail(entry: &Entry, attempt: u64, failure: LoadFailure) {
    let jobs: Vec<Work> = {
        let mut st = entry.lock();
        st.phase = Phase::Unloaded;
        st.last_error = Some((attempt, failure.clone()));
        st.queue.drain(..).collect()
    };
    entry.notify();
    for job in jobs {
        job.fail(failure.to_error(&entry.spec.name));
    }
}

/// Reserves `needed` bytes for `entry`, unloading idle models least recently used first.
fn reserve(shared: &Shared, entry: &Arc<Entry>, needed: u64) -> Result<(), LoadFailure> {
    let budget = shared.config.memory_budget;
    let mut used = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
    if *used + needed > budget {
        let mut idle: Vec<(Instant, &Arc<Entry>)> = shared
            .entries
            .values()
            .filter(|e| !Arc::ptr_eq(e, entry))
            .filter_map(|e| {
                let st = e.lock();
                st.is_idle_loaded().then_some((st.idle_since, e))
            })
            .collect();
        idle.sort_by_key(|(since, _)| *since);
        for (_, victim) in idle {
            if *used + needed <= budget {
                break;
            }
            let mut st = victim.lock();
            // Still idle? A request may have arrived since the scan.
            if st.is_idle_loaded() {
                *used -= unload_locked(&mut st);
                drop(st);
                victim.notify();
                shared.count(|c| c.evictions += 1);
            }
        }
    }
    if *used + needed > budget {
        return Err(LoadFailure::OutOfMemory {
            needed,
            available: budget.saturating_sub(*used),
            budget,
        });
    }
    *used += needed;
    entry.lock().reserved = needed;
    Ok(())
}

/// Returns `entry`'s reservation to the budget.
fn release(shared: &Shared, entry: &Entry) {
    let mut used = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = entry.lock();
    *used -= std::mem::take(&mut st.reserved);
}

/// Unloads an idle model: its workers exit (dropping their sessions) and the last handle of the
/// weights goes with them. Returns the bytes freed. The caller holds the memory lock.
fn unload_locked(st: &mut State) -> u64 {
    st.phase = Phase::Unloaded;
    st.drop_batcher();
    st.generation += 1;
    st.unloads += 1;
    std::mem::take(&mut st.reserved)
}

/// Unloads `entry` if it is loaded, idle and `should(&state)`. Returns whether it did.
pub(super) fn unload_if_idle(
    shared: &Shared,
    entry: &Entry,
    should: impl FnOnce(&State) -> bool,
) -> bool {
    let mut used = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = entry.lock();
    if !st.is_idle_loaded() || !should(&st) {
        return false;
    }
    *used -= unload_locked(&mut st);
    drop(st);
    entry.notify();
    true
}

impl Entry {
    /// Kind check, admission control, then queueing; starts a load when cold.
    pub(super) fn submit(self: &Arc<Self>, shared: &Arc<Shared>, job: Work) -> Result<()> {
        if job.kind() != self.spec.kind {
            return Err(Error::WrongModelKind {
                model: self.spec.name.clone(),
                kind: self.spec.kind,
                wanted: job.kind(),
            });
        }
        let mut st = self.lock();
        if st.shutdown {
            return Err(Error::ShuttingDown(self.spec.name.clone()));
        }
        if st.busy + st.queue.len() >= self.spec.parallel + self.spec.queue_depth {
            drop(st);
            shared.count(|c| c.rejected += 1);
            return Err(Error::Overloaded {
                model: self.spec.name.clone(),
                retry_after: shared.config.retry_after,
            });
        }
        st.queue.push_back(job);
        let hit = matches!(st.phase, Phase::Loaded(_));
        let load = matches!(st.phase, Phase::Unloaded).then(|| start_load(&mut st));
        drop(st);
        if let Some(attempt) = load {
            spawn(shared.clone(), self.clone(), attempt);
        }
        shared.count(|c| if hit { c.hits += 1 } else { c.misses += 1 });
        self.notify();
        Ok(())
    }

    /// Loads the model if needed and waits for the outcome.
    pub(super) fn load_and_wait(self: &Arc<Self>, shared: &Arc<Shared>) -> Result<()> {
        let mut st = self.lock();
        let loads_before = st.loads;
        let attempt = match st.phase {
            Phase::Loaded(_) => return Ok(()),
            Phase::Loading => st.attempts,
            Phase::Unloaded => {
                let attempt = start_load(&mut st);
                drop(st);
                spawn(shared.clone(), self.clone(), attempt);
                st = self.lock();
                attempt
            }
        };
        loop {
            if st.shutdown {
                return Err(Error::ShuttingDown(self.spec.name.clone()));
            }
            match (&st.phase, &st.last_error) {
                (Phase::Loaded(_), _) => return Ok(()),
                (Phase::Unloaded, Some((a, failure))) if *a == attempt => {
                    return Err(failure.to_error(&self.spec.name));
                }
                // Loaded and already unloaded again (keep-alive 0): the load happened.
                (Phase::Unloaded, _) if st.loads > loads_before => return Ok(()),
                _ => {}
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}
