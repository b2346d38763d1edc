//! Prometheus metrics of the process, served at `/metrics` in the OpenMetrics text format.
//!
//! Several sources, each owned where the events happen:
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
//!   `slmfn_event_deliveries_total{function,outcome}`): recorded by [`crate::delivery::Events`].
//! - **The model pool** (`slmfn_model_*`, `slmfn_pool_*`): read from
//!   [`slmfn_models::ModelPool::status`] and [`slmfn_models::ModelPool::stats`] at scrape time,
//!   so they can never drift from the pool's own bookkeeping.
//!
//! With `K_SERVICE`, `K_REVISION` or `K_CONFIGURATION` set, every series also carries
//! `k_service`, `k_revision`, `k_configuration`.
//!
//! Labels are bounded: function names only of deployed functions, model names only of
//! configured models, endpoints only of matched routes. Prompts and completions never appear.
//!
//! # Layout
//!
//! - this module: the registry, invocations and OpenAI API requests ([`Metrics`]);
//! - `generation`: generations, embeddings and usage per function ([`GenerationMetrics`]);
//! - `pool`: the model pool, read at scrape time.

mod generation;
mod pool;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use slmfn_models::ModelPool;

pub use generation::GenerationMetrics;
use pool::PoolCollector;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Invocation latency buckets, in seconds: from a 1 ms echo to the 5-minute request timeout
/// Knative allows by default.
const INVOCATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
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

/// A part of the process that keeps its own metric families (tool calls, events) and adds
/// them to the registry.
pub trait MetricSource {
    /// Adds the families to `registry` (prefixed `slmfn_` by it).
    fn register(&self, registry: &mut Registry);
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
    /// Metrics over the generations and the pool of the models (none when no model is
    /// configured) and over `sources` (tool calls, events). `constant` labels go on every series (the Knative service, revision and
    /// configuration).
    pub fn new(
        models: Option<(&GenerationMetrics, Arc<ModelPool>)>,
        sources: &[&dyn MetricSource],
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
        for source in sources {
            source.register(&mut registry);
        }
        if let Some((generations, pool)) = models {
            generations.register(&mut registry);
            registry.register_collector(Box::new(PoolCollector(pool)));
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
