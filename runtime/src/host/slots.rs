//! The instance slots of each loaded function (`max_concurrency`) and the calls waiting for
//! them, and the guest memory budget, read at scrape time: `function_instances_busy`,
//! `function_instances_limit`, `function_calls_waiting`, `guest_memory_reserved_mib` and
//! `guest_memory_budget_mib`; and the registry's `registry_quarantined_records`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Host;

impl Host {
    /// For each loaded function: instances running now (their slots taken), its limit and
    /// the calls waiting to be admitted. A redeployed function counts its current revision's
    /// calls only.
    pub fn instance_slots(&self) -> Vec<(String, usize, usize, usize)> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .iter()
            .map(|(name, revision)| {
                let limit = revision.record.manifest.limits.max_concurrency as usize;
                (
                    name.clone(),
                    limit.saturating_sub(revision.slots.available_permits()),
                    limit,
                    revision.waiting.count(),
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
        let waiting = Family::<FunctionLabels, Gauge>::default();
        for (function, running, max, waiters) in self.0.instance_slots() {
            let labels = FunctionLabels { function };
            busy.get_or_create(&labels).set(running as i64);
            limit.get_or_create(&labels).set(max as i64);
            waiting.get_or_create(&labels).set(waiters as i64);
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
            (
                "function_calls_waiting",
                "Calls of a function waiting for an instance slot or guest memory.",
                &waiting,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        let (reserved, budget) = self.0.guest_memory();
        let quarantined = self.0.registry().quarantined_count();
        for (name, help, value) in [
            (
                "guest_memory_reserved_mib",
                "Guest linear memory reserved by running instances (their memory_mb), in MiB.",
                i64::from(reserved),
            ),
            (
                "guest_memory_budget_mib",
                "The guest memory budget (--guest-memory-mb), in MiB.",
                i64::from(budget),
            ),
            (
                "registry_quarantined_records",
                "Registry records that did not decode at open, set aside (see /admin/quarantine).",
                quarantined as i64,
            ),
        ] {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}
