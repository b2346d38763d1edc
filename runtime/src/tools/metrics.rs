//! Tool-call metrics: `slmfn_tool_calls_total{function,tool,outcome}` and
//! `slmfn_tool_call_duration_seconds{function,tool}`. The `tool` label is only ever a tool
//! that exists and is granted (a refused name is counted under `tool=""`), so a guest cannot
//! grow the label set with names of its choosing.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Tool-call latency buckets, in seconds: from an in-process component (tens of µs) to a
/// slow remote server.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    function: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    function: String,
    tool: String,
}

/// The tool metrics of a [`crate::tools::Toolbox`].
#[derive(Clone, Debug)]
pub struct ToolMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<ToolLabels, Histogram, fn() -> Histogram>,
}

impl Default for ToolMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }
}

impl ToolMetrics {
    pub(crate) fn record(
        &self,
        function: &str,
        tool: &str,
        outcome: &'static str,
        elapsed: Option<Duration>,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                function: function.to_string(),
                tool: tool.to_string(),
                outcome,
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.duration
                .get_or_create(&ToolLabels {
                    function: function.to_string(),
                    tool: tool.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }
}

impl crate::metrics::MetricSource for ToolMetrics {
    /// Adds the families to `registry` (prefixed `slmfn_` by it).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "tool_calls",
            "Tool calls by calling function, tool and outcome (ok, tool_error, not_found, invalid_arguments, unavailable, failed)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "tool_call_duration",
            "Time of tool calls that reached their provider",
            Unit::Seconds,
            self.duration.clone(),
        );
    }
}
