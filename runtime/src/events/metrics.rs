//! Event metrics: `slmfn_events_received_total{mode}` (binary, structured, batch; one per
//! request) and `slmfn_event_deliveries_total{function,outcome}` (reply, no_reply, duplicate,
//! refused, failed; one per event and matching function). `function` is only ever a deployed
//! agent's name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    function: String,
    outcome: &'static str,
}

/// The metrics of an [`super::Events`].
#[derive(Clone, Debug, Default)]
pub struct EventMetrics {
    received: Family<ModeLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
}

impl EventMetrics {
    pub(crate) fn received(&self, mode: &'static str) {
        self.received.get_or_create(&ModeLabels { mode }).inc();
    }

    pub(crate) fn delivered(&self, function: &str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                function: function.to_string(),
                outcome,
            })
            .inc();
    }
}

impl crate::metrics::MetricSource for EventMetrics {
    /// Adds the families to `registry` (prefixed `slmfn_` by it).
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_received",
            "CloudEvent requests by content mode (binary, structured, batch)",
            self.received.clone(),
        );
        registry.register(
            "event_deliveries",
            "Events delivered to functions by outcome (reply, no_reply, duplicate, refused, failed)",
            self.deliveries.clone(),
        );
    }
}
