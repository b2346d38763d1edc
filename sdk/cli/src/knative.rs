//! `fn deploy --knative`: a function's Knative manifests, from its `fn.toml`.
//!
//! - a `serving.knative.dev/v1` **Service** named after the function, running the runtime
//!   image with the function baked in (`SLMFN_FUNCTIONS_DIR`, see knative/README.md): scale
//!   to zero, the concurrency target from the model's parallel sessions, probes on `/readyz`
//!   and `/healthz`, memory from `[limits]`, the request timeout from `timeout_ms`;
//! - one `eventing.knative.dev/v1` **Trigger** per `[[triggers]]` entry, its filters as
//!   written, its `delivery` from `[triggers.delivery]`, delivering to the Service's `/events`.
//!
//! The models are named as in `fn.toml` (`SLMFN_MODELS=smollm2`): the image must carry them in
//! its model cache (`knative/Containerfile` with `WITH_MODEL=smollm2`), or edit the env to a
//! mounted path (`smollm2=/models/smollm2.gguf`, as knative/service.yaml does).
//!
//! Autoscaling: Knative's KPA on request concurrency by default; `--autoscaler hpa` renders the
//! HPA class scaling on the runtime's own `slmfn_model_queue_depth` (needs a Prometheus adapter
//! exposing it as a custom metric); `--autoscaler keda` renders the same for Knative's KEDA
//! extension (`autoscaler-keda`, a drop-in for the HPA class's controller), which creates a
//! KEDA ScaledObject with a Prometheus trigger on the query it is given: no adapter needed.

use serde_json::{Value, json};
use slmfn_runtime::manifest::Manifest;

/// Which autoscaler the Service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Autoscaler {
    /// Knative's KPA on in-flight requests per pod (scales to zero).
    Kpa,
    /// The Kubernetes HPA on the runtime's model queue depth (no scale to zero).
    Hpa,
    /// The same through Knative's KEDA extension, querying Prometheus itself.
    Keda,
}

/// What the manifests need beyond `fn.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The runtime image with this function in `/functions`.
    pub(crate) image: String,
    /// The Broker the triggers subscribe to.
    pub(crate) broker: String,
    /// Concurrent generation sessions per pod (`SLMFN_MODEL_PARALLEL`).
    pub(crate) parallel: u32,
    pub(crate) autoscaler: Autoscaler,
    /// The Prometheus the KEDA extension queries (`--autoscaler keda`).
    pub(crate) prometheus: String,
}

/// Waiting requests per pod at the model (`slmfn_model_queue_depth`) the HPA and KEDA
/// variants aim at.
const QUEUE_TARGET: &str = "4";

/// Extra memory a pod needs beyond its guests: the runtime plus the default model's weights
/// and one session's KV cache.
const RUNTIME_MEMORY_MB: u64 = 768;
/// Each further generation session's full-context KV cache (SmolLM2-135M: 8192 × 45 KiB).
const SESSION_MEMORY_MB: u64 = 360;

/// The Service and Triggers, in order.
pub(crate) fn render(manifest: &Manifest, options: &Options) -> Vec<Value> {
    let mut docs = vec![service(manifest, options)];
    for (i, trigger) in manifest.triggers.iter().enumerate() {
        let mut spec = json!({
            "broker": options.broker,
            "subscriber": {
                "ref": { "apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": manifest.name },
                "uri": "/events",
            },
        });
        if let Some(filter) = &trigger.filter {
            spec["filter"] = json!({ "attributes": filter.attributes });
        }
        if !trigger.filters.is_empty() {
            spec["filters"] = serde_json::to_value(&trigger.filters).expect("filters serialize");
        }
        if let Some(d) = &trigger.delivery {
            let mut delivery = json!({});
            if let Some(retry) = d.retry {
                delivery["retry"] = retry.into();
            }
            if let Some(policy) = d.backoff_policy {
                delivery["backoffPolicy"] = serde_json::to_value(policy).expect("policy");
            }
            if let Some(delay) = &d.backoff_delay {
                delivery["backoffDelay"] = delay.clone().into();
            }
            if let Some(sink) = &d.dead_letter_sink {
                delivery["deadLetterSink"] = json!({ "uri": sink });
            }
            spec["delivery"] = delivery;
        }
        docs.push(json!({
            "apiVersion": "eventing.knative.dev/v1",
            "kind": "Trigger",
            "metadata": { "name": format!("{}-{i}", manifest.name), "labels": labels(manifest) },
            "spec": spec,
        }));
    }
    docs
}

fn labels(manifest: &Manifest) -> Value {
    json!({ "app.kubernetes.io/name": manifest.name, "app.kubernetes.io/managed-by": "slmfn" })
}

fn service(manifest: &Manifest, options: &Options) -> Value {
    let limits = &manifest.limits;
    let guest_mb = u64::from(limits.memory_mb) * u64::from(limits.max_concurrency.min(8))
        + SESSION_MEMORY_MB * u64::from(options.parallel.saturating_sub(1));
    let mut annotations = json!({
        "autoscaling.knative.dev/min-scale": "0",
        "autoscaling.knative.dev/initial-scale": "1",
        // Keep a warm pod (and its loaded model) through the gaps of a burst.
        "autoscaling.knative.dev/scale-down-delay": "5m",
        "autoscaling.knative.dev/scale-to-zero-pod-retention-period": "5m",
    });
    match options.autoscaler {
        Autoscaler::Kpa => {
            annotations["autoscaling.knative.dev/class"] = "kpa.autoscaling.knative.dev".into();
            annotations["autoscaling.knative.dev/metric"] = "concurrency".into();
            // One request per generation session keeps every queued request behind a busy
            // model on another pod.
            annotations["autoscaling.knative.dev/target"] = options.parallel.to_string().into();
        }
        Autoscaler::Hpa | Autoscaler::Keda => {
            // The KEDA extension replaces the HPA class's controller: same class.
            annotations["autoscaling.knative.dev/class"] = "hpa.autoscaling.knative.dev".into();
            annotations["autoscaling.knative.dev/min-scale"] = "1".into();
            annotations["autoscaling.knative.dev/metric"] = "slmfn_model_queue_depth".into();
            annotations["autoscaling.knative.dev/target"] = QUEUE_TARGET.into();
            if options.autoscaler == Autoscaler::Keda {
                annotations["autoscaling.knative.dev/prometheus-address"] =
                    options.prometheus.clone().into();
                // Every pod of the Service labels its metrics with k_service (K_SERVICE).
                annotations["autoscaling.knative.dev/prometheus-query"] = format!(
                    "sum(slmfn_model_queue_depth{{k_service=\"{}\"}})",
                    manifest.name
                )
                .into();
            }
        }
    }
    let models = &manifest.models;
    let mut env = vec![
        json!({ "name": "SLMFN_FUNCTIONS_DIR", "value": "/functions" }),
        json!({ "name": "SLMFN_DATA_DIR", "value": "/tmp/slmfn" }),
        json!({ "name": "SLMFN_LOG_FORMAT", "value": "json" }),
        json!({ "name": "SLMFN_MODEL_PARALLEL", "value": options.parallel.to_string() }),
    ];
    if !models.allowed.is_empty() {
        env.push(json!({ "name": "SLMFN_MODELS", "value": models.allowed.join(",") }));
    }
    if let Some(default) = &models.default {
        // The first event must not wait for the model: /readyz waits for it instead.
        env.push(json!({ "name": "SLMFN_PRELOAD", "value": default }));
    }
    let probe = |path: &str| json!({ "httpGet": { "path": path } });
    json!({
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": { "name": manifest.name, "labels": labels(manifest) },
        "spec": { "template": {
            "metadata": { "annotations": annotations, "labels": labels(manifest) },
            "spec": {
                "containerConcurrency": limits.max_concurrency,
                "timeoutSeconds": limits.timeout_ms.div_ceil(1000) + 10,
                "containers": [{
                    "name": "runtime",
                    "image": options.image,
                    "ports": [{ "containerPort": 8080, "name": "h2c" }],
                    "env": env,
                    "readinessProbe": probe("/readyz"),
                    "livenessProbe": probe("/healthz"),
                    "resources": {
                        "requests": { "cpu": "1", "memory": format!("{}Mi", RUNTIME_MEMORY_MB + u64::from(limits.memory_mb)) },
                        "limits": { "memory": format!("{}Mi", RUNTIME_MEMORY_MB + guest_mb) },
                    },
                    "securityContext": {
                        "runAsNonRoot": true,
                        "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false,
                    },
                    "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
                }],
                "volumes": [{ "name": "tmp", "emptyDir": {} }],
            },
        }},
    })
}

/// Documents as YAML: every scalar written as a JSON literal (a double-quoted string is valid
/// YAML), maps and lists in block style. Enough for manifests; never reads YAML.
pub(crate) fn to_yaml(docs: &[Value]) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        block(doc, 0, &mut out);
    }
    out
}

fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", key(k)));
                nested(v, indent, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                out.push_str(&format!("{pad}-"));
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest aligned under it.
                        let mut inner = String::new();
                        block(v, indent + 2, &mut inner);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => nested(v, indent, out),
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{scalar}\n")),
    }
}

/// A key as a plain scalar when it is one of the safe shapes, else JSON-quoted.
fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn nested(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            block(v, indent + 2, out);
        }
        Value::Object(_) => out.push_str(" {}\n"),
        Value::Array(_) => out.push_str(" []\n"),
        scalar => out.push_str(&format!(" {scalar}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_renders_a_service_and_its_triggers() {
        let manifest = Manifest::parse(
            r#"name = "ci-triage"
[limits]
timeout_ms = 60000
[models]
allowed = ["smollm2"]
default = "smollm2"
[[triggers]]
filter = { attributes = { type = "dev.ci.build.failed" } }
delivery = { retry = 3, backoff_policy = "exponential", backoff_delay = "PT0.5S", dead_letter_sink = "http://dlq.default.svc" }
[[triggers]]
filters = [ { prefix = { type = "dev.ci." } } ]
"#,
        )
        .unwrap();
        let options = Options {
            image: "localhost/slmfn:0.1.0".into(),
            broker: "default".into(),
            parallel: 1,
            autoscaler: Autoscaler::Kpa,
            prometheus: String::new(),
        };
        let docs = render(&manifest, &options);
        assert_eq!(docs.len(), 3);
        let spec = &docs[0]["spec"]["template"];
        assert_eq!(
            spec["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"],
            "0"
        );
        assert_eq!(spec["spec"]["timeoutSeconds"], 70);
        assert_eq!(
            docs[1]["spec"]["filter"]["attributes"]["type"],
            "dev.ci.build.failed"
        );
        assert_eq!(docs[1]["spec"]["delivery"]["backoffPolicy"], "exponential");
        assert_eq!(
            docs[1]["spec"]["delivery"]["deadLetterSink"]["uri"],
            "http://dlq.default.svc"
        );
        assert_eq!(docs[2]["spec"]["filters"][0]["prefix"]["type"], "dev.ci.");
        let yaml = to_yaml(&docs);
        assert!(
            yaml.starts_with("---\napiVersion: \"serving.knative.dev/v1\"\n"),
            "{yaml}"
        );
        assert!(yaml.contains("\n        - name: \"runtime\"\n"), "{yaml}");
    }

    #[test]
    fn the_keda_variant_queries_the_services_own_queue_depth() {
        let manifest = Manifest::parse("name = \"ci-triage\"\n").unwrap();
        let options = Options {
            image: "localhost/slmfn:0.1.0".into(),
            broker: "default".into(),
            parallel: 2,
            autoscaler: Autoscaler::Keda,
            prometheus: "http://prometheus.monitoring.svc:9090".into(),
        };
        let docs = render(&manifest, &options);
        let annotations = &docs[0]["spec"]["template"]["metadata"]["annotations"];
        let get = |k: &str| annotations[format!("autoscaling.knative.dev/{k}")].clone();
        assert_eq!(get("class"), "hpa.autoscaling.knative.dev");
        assert_eq!(get("metric"), "slmfn_model_queue_depth");
        assert_eq!(get("target"), QUEUE_TARGET);
        assert_eq!(
            get("prometheus-address"),
            "http://prometheus.monitoring.svc:9090"
        );
        assert_eq!(
            get("prometheus-query"),
            r#"sum(slmfn_model_queue_depth{k_service="ci-triage"})"#
        );
        let kpa = render(
            &manifest,
            &Options {
                autoscaler: Autoscaler::Kpa,
                ..options
            },
        );
        let kpa = &kpa[0]["spec"]["template"]["metadata"]["annotations"];
        assert!(
            kpa.get("autoscaling.knative.dev/prometheus-query")
                .is_none()
        );
    }
}
