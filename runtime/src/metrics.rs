//! Prometheus metrics of the process, served at `/metrics` in the OpenMetrics text format.
//!
//! Three sources, each owned where the events happen:
//!
//! - **Invocations** (`slmfn_invocations_total{function,status}`,
//!   `slmfn_invocation_duration_seconds{function}`) and OpenAI API requests
//!   (`slmfn_openai_requests_total{endpoint,status}`): recorded by the HTTP server into
//!   [`Metrics`].
//! - **Generations** (`slmfn_prompt_tokens_total{model}`, `slmfn_completion_tokens_total{model}`,
//!   `slmfn_generations_total{model,outcome}`, `slmfn_time_to_first_token_seconds{model}`,
//!   `slmfn_generation_duration_seconds{model}`): recorded by [`crate::inference::Generation`]
//!   when a generation finishes, so every adapter (WIT `inference`, the OpenAI API) is counted
//!   the same way without doing anything. Embedding calls (`slmfn_embeddings_total{model,
//!   outcome}`, their tokens in `slmfn_prompt_tokens_total`) are recorded by
//!   [`crate::inference::Inference::embed`] the same way.
//! - **Usage per function** (`slmfn_function_prompt_tokens_total{function,model}`,
//!   `slmfn_function_completion_tokens_total{function,model}`,
//!   `slmfn_function_inference_seconds_total{function,model}`): the same records, for the
//!   calls a deployed function made through the WIT `inference` interface (the metering a
//!   platform bills or budgets by; OpenAI API calls have no function and are not in them).
//! - **Tool calls** (`slmfn_tool_calls_total{function,tool,outcome}`,
//!   `slmfn_tool_call_duration_seconds{function,tool}`): recorded by
//!   [`crate::tools::Toolbox::call`] for every caller.
//! - **Events** (`slmfn_events_received_total{mode}`,
//!   `slmfn_event_deliveries_total{function,outcome}`): recorded by [`crate::events::Events`].
//! - **The model pool** (`slmfn_model_*`, `slmfn_pool_*`): read from
//!   [`slmfn_models::ModelPool::status`] and [`slmfn_models::ModelPool::stats`] at scrape time,
//!   so they can never drift from the pool's own bookkeeping.
//!
//! With `K_SERVICE`, `K_REVISION` or `K_CONFIGURATION` set, every series also carries
//! `k_service`, `k_revision`, `k_configuration`.
//!
//! Labels are bounded: function names only of deployed functions, model names only of
//! configured models, endpoints only of matched routes. Prompts and completions never appear.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use slmfn_models::{Completion, FinishReason, ModelState};

use crate::inference::{Inference, ModelError};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Invocation latency buckets, in seconds: from a 1 ms echo to the 5-minute request timeout
/// Knative allows by default.
const INVOCATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Time-to-first-token buckets, in seconds: a warm small model answers in tens of
/// milliseconds; a cold load, a long prompt or a queue takes seconds.
const TTFT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Whole-generation buckets, in seconds.
const GENERATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionModelLabels {
    function: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    model: String,
    state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process's metrics: the registry `/metrics` encodes, and the handles the HTTP server
/// records into. Build one per server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    invocations: Family<InvocationLabels, Counter>,
    invocation_duration: HistogramFamily<FunctionLabels>,
    openai_requests: Family<EndpointLabels, Counter>,
}

impl Metrics {
    /// Metrics over `inference`'s generations and pool (none when no model is configured).
    /// `constant` labels go on every series (the Knative service, revision and configuration).
    pub fn new(
        inference: Option<Arc<Inference>>,
        tools: &crate::tools::ToolMetrics,
        events: &crate::events::EventMetrics,
        constant: Vec<(&'static str, String)>,
    ) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "slmfn",
            constant
                .into_iter()
                .map(|(k, v)| (std::borrow::Cow::Borrowed(k), std::borrow::Cow::Owned(v))),
        );
        let invocations = Family::<InvocationLabels, Counter>::default();
        registry.register(
            "invocations",
            "Function invocations by function and HTTP status",
            invocations.clone(),
        );
        let invocation_duration: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(|| Histogram::new(INVOCATION_BUCKETS));
        registry.register_with_unit(
            "invocation_duration",
            "Time from request to response headers of function invocations",
            Unit::Seconds,
            invocation_duration.clone(),
        );
        let openai_requests = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "openai_requests",
            "OpenAI-compatible API requests by endpoint and HTTP status",
            openai_requests.clone(),
        );
        tools.register(&mut registry);
        events.register(&mut registry);
        if let Some(inference) = inference {
            inference.metrics().register(&mut registry);
            registry.register_collector(Box::new(PoolCollector(inference)));
        }
        Self {
            registry,
            invocations,
            invocation_duration,
            openai_requests,
        }
    }

    /// Counts one invocation of a deployed function.
    pub fn record_invocation(&self, function: &str, status: u16, elapsed: Duration) {
        self.invocations
            .get_or_create(&InvocationLabels {
                function: function.to_string(),
                status,
            })
            .inc();
        self.invocation_duration
            .get_or_create(&FunctionLabels {
                function: function.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one request to an OpenAI-compatible endpoint (a route pattern such as
    /// `/v1/chat/completions`).
    pub fn record_openai_request(&self, endpoint: &str, status: u16) {
        self.openai_requests
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
    }

    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an error here would be a bug in a collector.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Per-model generation metrics. [`crate::inference::Inference`] owns one and every
/// [`crate::inference::Generation`] records into it when it finishes.
#[derive(Clone, Debug)]
pub struct GenerationMetrics {
    prompt_tokens: Family<ModelLabels, Counter>,
    /// Of `prompt_tokens`, those reused from a session's prompt cache.
    cached_prompt_tokens: Family<ModelLabels, Counter>,
    completion_tokens: Family<ModelLabels, Counter>,
    generations: Family<OutcomeLabels, Counter>,
    embeddings: Family<OutcomeLabels, Counter>,
    time_to_first_token: HistogramFamily<ModelLabels>,
    duration: HistogramFamily<ModelLabels>,
    function_prompt_tokens: Family<FunctionModelLabels, Counter>,
    function_completion_tokens: Family<FunctionModelLabels, Counter>,
    /// Seconds of model time per function: a generation's `Usage::duration` (on a worker,
    /// queue excluded), an embedding call's time from submission.
    function_inference_seconds: Family<FunctionModelLabels, Counter<f64, AtomicU64>>,
}

impl Default for GenerationMetrics {
    fn default() -> Self {
        Self {
            prompt_tokens: Family::default(),
            cached_prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            generations: Family::default(),
            embeddings: Family::default(),
            time_to_first_token: Family::new_with_constructor(|| Histogram::new(TTFT_BUCKETS)),
            duration: Family::new_with_constructor(|| Histogram::new(GENERATION_BUCKETS)),
            function_prompt_tokens: Family::default(),
            function_completion_tokens: Family::default(),
            function_inference_seconds: Family::default(),
        }
    }
}

impl GenerationMetrics {
    /// Records a finished generation of `model`, made for `function` when a deployed function
    /// asked for it. `elapsed` runs from the submission to the pool (queueing and a cold load
    /// included) to the outcome; `timed_out` says whether a cancellation was the caller's
    /// deadline.
    pub fn record_generation(
        &self,
        model: &str,
        function: Option<&str>,
        outcome: &Result<Completion, ModelError>,
        elapsed: Duration,
        timed_out: bool,
    ) {
        let labels = ModelLabels {
            model: model.to_string(),
        };
        let outcome_label = match outcome {
            Ok(c) => match c.finish_reason {
                FinishReason::Cancelled if timed_out => "timeout",
                reason => reason.as_str(),
            },
            Err(_) => "error",
        };
        self.generations
            .get_or_create(&OutcomeLabels {
                model: model.to_string(),
                outcome: outcome_label,
            })
            .inc();
        let Ok(completion) = outcome else {
            return;
        };
        let usage = &completion.usage;
        self.prompt_tokens
            .get_or_create(&labels)
            .inc_by(usage.prompt_tokens as u64);
        self.cached_prompt_tokens
            .get_or_create(&labels)
            .inc_by(usage.cached_tokens as u64);
        self.completion_tokens
            .get_or_create(&labels)
            .inc_by(usage.completion_tokens as u64);
        self.record_function_usage(
            function,
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.duration,
        );
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if usage.completion_tokens > 0 {
            // The session measures from when a worker picked the job up; what a caller waits
            // for also includes the queue and any load before that.
            let waited = elapsed.saturating_sub(usage.duration);
            self.time_to_first_token
                .get_or_create(&labels)
                .observe((waited + usage.time_to_first_token).as_secs_f64());
        }
    }

    /// Records a finished embedding call of `model`: its outcome (`ok`, `timeout`, `error`)
    /// and, when it succeeded, its tokens as prompt tokens.
    pub fn record_embedding(
        &self,
        model: &str,
        function: Option<&str>,
        outcome: &Result<slmfn_models::Embeddings, ModelError>,
        elapsed: Duration,
    ) {
        let outcome_label = match outcome {
            Ok(_) => "ok",
            Err(ModelError::Cancelled(_)) => "timeout",
            Err(_) => "error",
        };
        self.embeddings
            .get_or_create(&OutcomeLabels {
                model: model.to_string(),
                outcome: outcome_label,
            })
            .inc();
        if let Ok(embeddings) = outcome {
            self.prompt_tokens
                .get_or_create(&ModelLabels {
                    model: model.to_string(),
                })
                .inc_by(embeddings.prompt_tokens as u64);
            self.record_function_usage(function, model, embeddings.prompt_tokens, 0, elapsed);
        }
    }

    fn record_function_usage(
        &self,
        function: Option<&str>,
        model: &str,
        prompt_tokens: usize,
        completion_tokens: usize,
        work: Duration,
    ) {
        let Some(function) = function else {
            return;
        };
        let labels = FunctionModelLabels {
            function: function.to_string(),
            model: model.to_string(),
        };
        self.function_prompt_tokens
            .get_or_create(&labels)
            .inc_by(prompt_tokens as u64);
        self.function_completion_tokens
            .get_or_create(&labels)
            .inc_by(completion_tokens as u64);
        self.function_inference_seconds
            .get_or_create(&labels)
            .inc_by(work.as_secs_f64());
    }

    /// Records a generation whose caller went away before its outcome (a client that
    /// disconnected, a guest that dropped its stream): it was cancelled.
    pub fn record_cancelled(&self, model: &str) {
        self.generations
            .get_or_create(&OutcomeLabels {
                model: model.to_string(),
                outcome: "cancelled",
            })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed, per model",
            self.prompt_tokens.clone(),
        );
        registry.register(
            "cached_prompt_tokens",
            "Prompt tokens whose keys and values a session reused from its previous prompt (prompt cache), per model",
            self.cached_prompt_tokens.clone(),
        );
        registry.register(
            "completion_tokens",
            "Tokens generated, per model",
            self.completion_tokens.clone(),
        );
        registry.register(
            "generations",
            "Finished generations by model and outcome (stop, length, timeout, cancelled, error)",
            self.generations.clone(),
        );
        registry.register(
            "embeddings",
            "Finished embedding calls by model and outcome (ok, timeout, error)",
            self.embeddings.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "Time from submission (queue and load included) to the first generated token",
            Unit::Seconds,
            self.time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "generation_duration",
            "Time from submission to the end of a generation",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "function_prompt_tokens",
            "Prompt (and embedded) tokens of the inference calls of each deployed function",
            self.function_prompt_tokens.clone(),
        );
        registry.register(
            "function_completion_tokens",
            "Tokens generated for each deployed function",
            self.function_completion_tokens.clone(),
        );
        registry.register_with_unit(
            "function_inference",
            "Model time used by each deployed function (generations: on a pool worker; embedding calls: from submission)",
            Unit::Seconds,
            self.function_inference_seconds.clone(),
        );
    }
}

/// Reads the pool's own bookkeeping at scrape time.
struct PoolCollector(Arc<Inference>);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PoolCollector").field(self.0.pool()).finish()
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
        let pool = self.0.pool();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use slmfn_models::{Completion, FinishReason, Usage};

    use super::*;

    #[test]
    fn generations_count_tokens_and_time_to_first_token_including_the_wait() {
        let metrics = GenerationMetrics::default();
        let completion = Completion {
            text: "secret answer".into(),
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 10,
                cached_tokens: 4,
                completion_tokens: 3,
                forced_tokens: 0,
                constraint_duration: Duration::ZERO,
                prompt_duration: Duration::from_millis(20),
                time_to_first_token: Duration::from_millis(30),
                duration: Duration::from_millis(100),
            },
            tokens: vec![1, 2, 3],
            tool_calls: Vec::new(),
        };
        // Submitted 1 s before the end, of which the session ran 100 ms: 900 ms waiting.
        metrics.record_generation(
            "m",
            Some("support-desk"),
            &Ok(completion.clone()),
            Duration::from_secs(1),
            false,
        );
        // An OpenAI API call: counted per model, not per function.
        metrics.record_generation("m", None, &Ok(completion), Duration::from_secs(1), false);
        metrics.record_generation(
            "m",
            Some("support-desk"),
            &Err(ModelError::InvalidInput("x".into())),
            Duration::ZERO,
            false,
        );
        metrics.record_cancelled("m");
        let mut registry = Registry::with_prefix("slmfn");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"slmfn_prompt_tokens_total{model="m"} 20"#,
            r#"slmfn_cached_prompt_tokens_total{model="m"} 8"#,
            r#"slmfn_completion_tokens_total{model="m"} 6"#,
            r#"slmfn_function_prompt_tokens_total{function="support-desk",model="m"} 10"#,
            r#"slmfn_function_completion_tokens_total{function="support-desk",model="m"} 3"#,
            r#"slmfn_function_inference_seconds_total{function="support-desk",model="m"} 0.1"#,
            r#"slmfn_generations_total{model="m",outcome="stop"} 2"#,
            r#"slmfn_generations_total{model="m",outcome="error"} 1"#,
            r#"slmfn_generations_total{model="m",outcome="cancelled"} 1"#,
            r#"slmfn_time_to_first_token_seconds_sum{model="m"} 1.86"#,
            r#"slmfn_time_to_first_token_seconds_bucket{le="1.0",model="m"} 2"#,
            r#"slmfn_time_to_first_token_seconds_bucket{le="0.5",model="m"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(!text.contains("secret"));
    }
}
