//! The models file (TOML): extra catalog entries.
//!
//! ```toml
//! [models.tiny]
//! source = "hf://owner/repo/tiny.Q8_0.gguf@main"
//! kind = "chat"                   # optional: "chat" or "embedding" (default: a `.zip` or a
//!                                 # directory is an embedding model, anything else chat)
//! sha256 = "…64 hex digits…"     # optional but recommended
//! context_length = 4096           # optional: cap on the context window
//! preload = true                  # optional (false): load before reporting ready
//! keep_alive = "10m"              # optional ("5m"): a duration, "0" or "forever"
//! parallel = 2                    # optional (1): concurrent sessions
//! queue_depth = 16                # optional (8): waiting requests
//! dense_prefill = true            # optional (false): f32 copies of the matrices for prompts
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::entry::ModelEntry;
use super::error::SourceError;
use super::{ModelSource, normalize_sha256, validate_model_name};
use crate::kind::ModelKind;
use crate::spec::{KeepAlive, ModelSpec};

/// A models file: `[models.NAME]` tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    /// The models by name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
}

/// One `[models.NAME]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Where the file comes from.
    pub source: ModelSource,
    /// `chat` or `embedding` (default: guessed from the source, see
    /// [`ModelSource::likely_kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ModelKind>,
    /// The pinned sha256 (64 hex digits, optionally `sha256:`-prefixed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Cap on the context window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<usize>,
    /// Load before the runtime reports ready.
    #[serde(default)]
    pub preload: bool,
    /// A duration (`"5m"`, `"90s"`, `"1h 30m"`), `"0"` (unload right after use) or
    /// `"forever"`; an integer is seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_keep_alive",
        deserialize_with = "deserialize_keep_alive"
    )]
    pub keep_alive: Option<KeepAlive>,
    /// Concurrent sessions (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<usize>,
    /// Requests that may wait when all sessions are busy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<usize>,
    /// Keep `f32` copies of the matrices for prompts (4 bytes per weight, see
    /// [`crate::LoadOptions::dense_prefill`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dense_prefill: bool,
}

impl ModelsFile {
    /// Parses a models file's text (relative local paths stay relative to the working
    /// directory).
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        Self::parse_at(text, Path::new(""))
    }

    fn parse_at(text: &str, path: &Path) -> Result<Self, SourceError> {
        let config: Self = toml::from_str(text).map_err(|e| SourceError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // Surface invalid names, digests and settings now, with the file's name.
        config.entries().map_err(|e| SourceError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(config)
    }

    /// Reads a models file. Relative local sources are relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, SourceError> {
        let text = std::fs::read_to_string(path).map_err(|e| SourceError::io("read", path, e))?;
        let mut config = Self::parse_at(&text, path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for model in config.models.values_mut() {
            model.source = model.source.clone().relative_to(&base);
        }
        Ok(config)
    }

    /// The entries, validated, in name order.
    pub fn entries(&self) -> Result<Vec<ModelEntry>, SourceError> {
        self.models
            .iter()
            .map(|(name, model)| model.to_entry(name))
            .collect()
    }
}

impl ModelConfig {
    /// The catalog entry named `name` (validated: name, digest, settings).
    pub fn to_entry(&self, name: &str) -> Result<ModelEntry, SourceError> {
        validate_model_name(name)?;
        let mut entry = ModelEntry::new(name, self.source.clone());
        if let Some(kind) = self.kind {
            entry.kind = kind;
        }
        entry.sha256 = self.sha256.as_deref().map(normalize_sha256).transpose()?;
        entry.context_length = self.context_length;
        entry.preload = self.preload;
        if let Some(keep_alive) = self.keep_alive {
            entry.keep_alive = keep_alive;
        }
        if let Some(parallel) = self.parallel {
            entry.parallel = parallel;
        }
        if let Some(queue_depth) = self.queue_depth {
            entry.queue_depth = queue_depth;
        }
        entry.dense_prefill = self.dense_prefill;
        entry.validate()?;
        Ok(entry)
    }

    /// The pool's spec for the model `name` whose file is at `path`.
    pub fn to_spec(&self, name: &str, path: impl Into<PathBuf>) -> Result<ModelSpec, SourceError> {
        Ok(self.to_entry(name)?.to_spec(path))
    }
}

/// Parses a keep-alive ([`KeepAlive::parse`]).
pub fn parse_keep_alive(text: &str) -> Result<KeepAlive, SourceError> {
    KeepAlive::parse(text).map_err(|e| SourceError::InvalidKeepAlive {
        input: e.input,
        reason: e.reason,
    })
}

fn serialize_keep_alive<S: Serializer>(
    value: &Option<KeepAlive>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(KeepAlive::Forever) => serializer.serialize_str("forever"),
        Some(KeepAlive::For(d)) if d.is_zero() => serializer.serialize_str("0"),
        Some(KeepAlive::For(d)) => serializer.collect_str(&humantime::format_duration(*d)),
        None => serializer.serialize_none(),
    }
}

fn deserialize_keep_alive<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<KeepAlive>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(secs) => Ok(Some(KeepAlive::For(Duration::from_secs(secs)))),
        Raw::Text(text) => parse_keep_alive(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}
