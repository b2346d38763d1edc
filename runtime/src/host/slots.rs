//! The instance slots of each loaded function (`max_concurrency`), read at scrape time:
//! `function_instances_busy` and `function_instances_limit`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Host;

impl Host {
    /// For each loaded function: instances running now (their slots taken) and its limit. A
    /// redeployed function counts its current revision's instances only.
    pub fn instance_slots(&self) -> Vec<(String, usize, usize)> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .iter()
            .map(|(name, revision)| {
                let limit = revision.record.manifest.limits.max_concurrency as usize;
                (
                    name.clone(),
                    limit.saturating_sub(revision.slots.available_permits()),
                    limit,
                )
            })
            .collect()
    }

    /// The slot gauges, for [`crate::metrics::Metrics::new`].
    pub fn slot_metrics(self: &Arc<Self>) -> SlotMetrics {
        SlotMetrics(self.clone())
    }
}

/// Registers the slot gauges of a host.
pub struct SlotMetrics(Arc<Host>);

impl crate::metrics::MetricSource for SlotMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(SlotCollector(self.0.clone())));
    }
}

struct SlotCollector(Arc<Host>);

impl std::fmt::Debug for SlotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotCollector").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

impl Collector for SlotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let busy = Family::<FunctionLabels, Gauge>::default();
        let limit = Family::<FunctionLabels, Gauge>::default();
        for (function, running, max) in self.0.instance_slots() {
            let labels = FunctionLabels { function };
            busy.get_or_create(&labels).set(running as i64);
            limit.get_or_create(&labels).set(max as i64);
        }
        for (name, help, family) in [
            (
                "function_instances_busy",
                "Instances of a function running now (slots of max_concurrency taken).",
                &busy,
            ),
            (
                "function_instances_limit",
                "A function's max_concurrency.",
                &limit,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}
