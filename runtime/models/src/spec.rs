//! One model the pool can serve: [`ModelSpec`], its [`KeepAlive`] and how a keep-alive is
//! written ([`KeepAlive::parse`]). The sources build specs, the pool serves them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kind::ModelKind;
use crate::sampler::SamplingParams;

/// How long an idle model stays loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeepAlive {
    /// Unload after this much idle time (`Duration::ZERO`: as soon as it is idle).
    For(Duration),
    /// Stay loaded until evicted to make room for another model.
    Forever,
}

impl Default for KeepAlive {
    /// Five minutes, Ollama's default.
    fn default() -> Self {
        Self::For(Duration::from_secs(300))
    }
}

/// One model the pool can serve.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The name callers use.
    pub name: String,
    /// Chat (a GGUF file) or embedding (a sentence-transformers directory or zip).
    pub kind: ModelKind,
    /// The GGUF file, or the embedding model's directory or zip (already fetched and verified
    /// by the caller).
    pub path: PathBuf,
    /// Cap on the context window (`None`: the model's trained window).
    pub context_length: Option<usize>,
    /// `f32` copies of the matrices for prompts (off by default, see
    /// [`crate::LoadOptions::dense_prefill`]).
    pub dense_prefill: bool,
    /// Sampling for requests that bring none.
    pub defaults: SamplingParams,
    /// How long the model stays loaded when idle.
    pub keep_alive: KeepAlive,
    /// Load at [`ModelPool::preload`] (before the process reports ready).
    pub preload: bool,
    /// Concurrent sessions (worker threads); each holds a KV cache.
    pub parallel: usize,
    /// Requests that may wait when all sessions are busy.
    pub queue_depth: usize,
}

impl ModelSpec {
    /// A chat model's spec with defaults: one session, a queue of 8, five minutes of
    /// keep-alive.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            kind: ModelKind::Chat,
            path: path.into(),
            context_length: None,
            dense_prefill: false,
            defaults: SamplingParams::default(),
            keep_alive: KeepAlive::default(),
            preload: false,
            parallel: 1,
            queue_depth: 8,
        }
    }

    /// An embedding model's spec with the same defaults.
    pub fn embedding(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            kind: ModelKind::Embedding,
            ..Self::new(name, path)
        }
    }
}

/// A keep-alive that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid keep_alive `{input}` ({reason})")]
pub struct InvalidKeepAlive {
    /// What was given.
    pub input: String,
    /// The parser's complaint.
    pub reason: String,
}

impl KeepAlive {
    /// Parses a keep-alive: `"forever"` (or `"-1"`), `"0"`, a number of seconds (`"300"`), or
    /// a duration such as `"5m"`, `"90s"`, `"1h 30m"`.
    pub fn parse(text: &str) -> Result<Self, InvalidKeepAlive> {
        let text = text.trim();
        if matches!(text, "forever" | "-1") {
            return Ok(Self::Forever);
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Self::For(Duration::from_secs(seconds)));
        }
        humantime::parse_duration(text)
            .map(Self::For)
            .map_err(|e| InvalidKeepAlive {
                input: text.to_string(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_parse_as_documented() {
        let secs = |s| KeepAlive::For(Duration::from_secs(s));
        for (text, expected) in [
            ("forever", KeepAlive::Forever),
            ("-1", KeepAlive::Forever),
            ("0", secs(0)),
            ("300", secs(300)),
            (" 90 ", secs(90)),
            ("5m", secs(300)),
            ("1h 30m", secs(5400)),
        ] {
            assert_eq!(KeepAlive::parse(text), Ok(expected), "{text:?}");
        }
        for bad in ["later", "", "-5", "5 parsecs"] {
            assert!(KeepAlive::parse(bad).is_err(), "{bad:?}");
        }
    }
}
