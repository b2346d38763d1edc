//! A [`ModelEntry`]: one model of the catalog or of a models file, before it is pulled.

use std::path::PathBuf;

use super::error::SourceError;
use super::{ModelSource, normalize_sha256, validate_model_name};
use crate::kind::ModelKind;
use crate::spec::{KeepAlive, ModelSpec};

/// A model the runtime can serve: where it comes from, the digest it must have, and its pool
/// settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    /// The name callers use (also its file name in the cache).
    pub name: String,
    /// Chat (a GGUF file) or embedding (a sentence-transformers directory, or a zip of one).
    pub kind: ModelKind,
    /// Where the file comes from.
    pub source: ModelSource,
    /// The pinned sha256 of the file, lower-case hex (`None`: not pinned; the digest recorded
    /// at pull time is then the reference).
    pub sha256: Option<String>,
    /// Cap on the context window (`None`: the model's trained window).
    pub context_length: Option<usize>,
    /// How long the model stays loaded when idle.
    pub keep_alive: KeepAlive,
    /// Load when the runtime starts, before it reports ready.
    pub preload: bool,
    /// Concurrent sessions.
    pub parallel: usize,
    /// Requests that may wait when all sessions are busy.
    pub queue_depth: usize,
    /// Keep `f32` copies of the matrices for prompts ([`crate::LoadOptions::dense_prefill`]).
    pub dense_prefill: bool,
}

impl ModelEntry {
    /// An unpinned entry with the pool's defaults (one session, a queue of 8, five minutes of
    /// keep-alive, no preload), its kind guessed from the source ([`ModelSource::likely_kind`]).
    pub fn new(name: impl Into<String>, source: ModelSource) -> Self {
        let defaults = ModelSpec::new("", "");
        Self {
            name: name.into(),
            kind: source.likely_kind(),
            source,
            sha256: None,
            context_length: None,
            keep_alive: defaults.keep_alive,
            preload: defaults.preload,
            parallel: defaults.parallel,
            queue_depth: defaults.queue_depth,
            dense_prefill: defaults.dense_prefill,
        }
    }

    /// Checks the name, the digest's form and the settings.
    pub fn validate(&self) -> Result<(), SourceError> {
        validate_model_name(&self.name)?;
        if let Some(digest) = &self.sha256
            && normalize_sha256(digest)? != *digest
        {
            return Err(SourceError::InvalidDigest {
                digest: format!("{digest} (not normalized: lower case, no prefix)"),
            });
        }
        let invalid = |reason: &str| SourceError::InvalidSetting {
            name: self.name.clone(),
            reason: reason.to_string(),
        };
        if self.parallel == 0 {
            return Err(invalid("`parallel` must be at least 1"));
        }
        if self.context_length == Some(0) {
            return Err(invalid("`context_length` must be at least 1"));
        }
        Ok(())
    }

    /// The pool's spec for this model, its file being at `path` (verified by the caller, see
    /// [`super::ModelCache::verify`]). Sampling defaults are the pool's.
    pub fn to_spec(&self, path: impl Into<PathBuf>) -> ModelSpec {
        let mut spec = ModelSpec::new(self.name.clone(), path);
        spec.kind = self.kind;
        spec.context_length = self.context_length;
        spec.keep_alive = self.keep_alive;
        spec.preload = self.preload;
        spec.parallel = self.parallel;
        spec.queue_depth = self.queue_depth;
        spec.dense_prefill = self.dense_prefill;
        spec
    }
}
