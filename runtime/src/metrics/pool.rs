//! The model pool's own bookkeeping ([`ModelPool::status`], [`ModelPool::stats`]), read at
//! scrape time so it can never drift.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Unit;
use slmfn_models::{ModelPool, ModelState};

use super::ModelLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    model: String,
    state: &'static str,
}

/// Reads the pool's own bookkeeping at scrape time.
pub(super) struct PoolCollector(pub(super) Arc<ModelPool>);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolCollector").field(&self.0).finish()
    }
}

const STATES: [ModelState; 4] = [
    ModelState::Unloaded,
    ModelState::Loading,
    ModelState::Idle,
    ModelState::Busy,
];

fn emit(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &impl EncodeMetric,
) -> std::fmt::Result {
    let metric_encoder = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let pool = &self.0;
        let status = pool.status();
        let stats = pool.stats();
        let model = |name: &str| ModelLabels {
            model: name.to_string(),
        };

        let loaded = status
            .iter()
            .filter(|s| matches!(s.state, ModelState::Idle | ModelState::Busy))
            .count();
        emit(
            &mut encoder,
            "models_loaded",
            "Models whose weights are in memory.",
            None,
            &ConstGauge::new(loaded as i64),
        )?;

        let state = Family::<StateLabels, Gauge>::default();
        let memory = Family::<ModelLabels, Gauge>::default();
        let busy = Family::<ModelLabels, Gauge>::default();
        let sessions = Family::<ModelLabels, Gauge>::default();
        let queued = Family::<ModelLabels, Gauge>::default();
        let loads = Family::<ModelLabels, Counter>::default();
        let unloads = Family::<ModelLabels, Counter>::default();
        let load_seconds = Family::<ModelLabels, Gauge<f64, AtomicU64>>::default();
        let batched_steps = Family::<ModelLabels, Counter>::default();
        let batched_session_steps = Family::<ModelLabels, Counter>::default();
        for s in &status {
            for candidate in STATES {
                state
                    .get_or_create(&StateLabels {
                        model: s.name.clone(),
                        state: candidate.as_str(),
                    })
                    .set(i64::from(s.state == candidate));
            }
            let m = model(&s.name);
            memory
                .get_or_create(&m)
                .set(i64::try_from(s.memory_bytes).unwrap_or(i64::MAX));
            busy.get_or_create(&m).set(s.busy_sessions as i64);
            sessions.get_or_create(&m).set(s.parallel as i64);
            queued.get_or_create(&m).set(s.queued as i64);
            loads.get_or_create(&m).inc_by(s.loads);
            unloads.get_or_create(&m).inc_by(s.unloads);
            batched_steps.get_or_create(&m).inc_by(s.batched_steps);
            batched_session_steps
                .get_or_create(&m)
                .inc_by(s.batched_session_steps);
            if let Some(d) = s.last_load_duration {
                load_seconds.get_or_create(&m).set(d.as_secs_f64());
            }
        }
        emit(
            &mut encoder,
            "model_state",
            "1 for the state each configured model is in (unloaded, loading, idle, busy).",
            None,
            &state,
        )?;
        emit(
            &mut encoder,
            "model_memory",
            "Bytes a model reserves in the pool's budget (weights plus full-context KV caches).",
            Some(&Unit::Bytes),
            &memory,
        )?;
        emit(
            &mut encoder,
            "model_sessions_busy",
            "Sessions running a generation.",
            None,
            &busy,
        )?;
        emit(
            &mut encoder,
            "model_sessions",
            "Sessions configured (parallel generations).",
            None,
            &sessions,
        )?;
        emit(
            &mut encoder,
            "model_batched_steps",
            "Forward passes of a model's batched sessions (parallel > 1).",
            None,
            &batched_steps,
        )?;
        emit(
            &mut encoder,
            "model_batched_session_steps",
            "Session steps those passes ran (divided by the passes: the mean batch width).",
            None,
            &batched_session_steps,
        )?;
        emit(
            &mut encoder,
            "model_queue_depth",
            "Requests waiting for a session.",
            None,
            &queued,
        )?;
        emit(
            &mut encoder,
            "model_loads",
            "Completed model loads.",
            None,
            &loads,
        )?;
        emit(
            &mut encoder,
            "model_unloads",
            "Model unloads (keep-alive, eviction or admin).",
            None,
            &unloads,
        )?;
        emit(
            &mut encoder,
            "model_load_duration",
            "How long the last successful load of a model took.",
            Some(&Unit::Seconds),
            &load_seconds,
        )?;
        emit(
            &mut encoder,
            "pool_memory_used",
            "Bytes reserved by loaded and loading models.",
            Some(&Unit::Bytes),
            &ConstGauge::new(i64::try_from(stats.memory_used).unwrap_or(i64::MAX)),
        )?;
        emit(
            &mut encoder,
            "pool_memory_budget",
            "Bytes all loaded models together may reserve.",
            Some(&Unit::Bytes),
            &ConstGauge::new(i64::try_from(stats.memory_budget).unwrap_or(i64::MAX)),
        )?;
        emit(
            &mut encoder,
            "pool_hits",
            "Requests that found their model loaded.",
            None,
            &ConstCounter::new(stats.hits),
        )?;
        emit(
            &mut encoder,
            "pool_misses",
            "Requests that had to wait for a model load.",
            None,
            &ConstCounter::new(stats.misses),
        )?;
        emit(
            &mut encoder,
            "pool_evictions",
            "Idle models unloaded to make room in the memory budget.",
            None,
            &ConstCounter::new(stats.evictions),
        )?;
        emit(
            &mut encoder,
            "pool_rejected",
            "Requests refused because the model's queue was full (HTTP 429).",
            None,
            &ConstCounter::new(stats.rejected),
        )
    }
}
