//! Generations, embedding calls and the usage of each deployed function, recorded by
//! [`crate::inference`] whichever adapter started them.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use slmfn_models::{Completion, Error as ModelError, FinishReason};

use super::{HistogramFamily, ModelLabels};

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
struct FunctionModelLabels {
    function: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: &'static str,
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

    pub(super) fn register(&self, registry: &mut Registry) {
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
