//! Builds the warm model pool from the runtime configuration: which models to serve (the
//! `--model` flags, a models file, else the built-in default chat model `smollm2` and default
//! embedding model `minilm`, each when it is cached), where their verified files are, and the
//! pool settings.
//!
//! A model's kind comes from its catalog or models-file entry, else from its source (a `.zip`
//! or a directory is an embedding model, anything else a GGUF chat model). The default chat
//! model is `--default-model` (which must be a chat model) or the first chat model; the default
//! embedding model is the first embedding model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use slmfn_models::source::{Catalog, ModelCache, ModelEntry, ModelSource, ModelsFile, SourceError};
use slmfn_models::{ModelKind, ModelPool, ModelSpec, PoolConfig};

use crate::config::ModelsConfig;
use crate::inference::{Inference, ModelError};

/// How long a caller refused with `overloaded` is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why the models configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsConfigError {
    /// A preloaded or default model is not served.
    #[error("{what} model {name:?} is not served (served: {served})")]
    Unknown {
        /// `preload` or `default`.
        what: &'static str,
        /// The name.
        name: String,
        /// The served names.
        served: String,
    },
    /// `--default-model` names an embedding model.
    #[error(
        "default model {name:?} is an embedding model; --default-model names the chat model \
         (the first embedding model served is the default for embeddings)"
    )]
    DefaultNotChat {
        /// The name.
        name: String,
    },
    /// A source, name, file or cache problem (not pulled, digest mismatch, ...).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A local model file is missing.
    #[error("model {name:?}: {path} does not exist")]
    MissingFile {
        /// The model.
        name: String,
        /// The path.
        path: PathBuf,
    },
    /// The pool refused the specs.
    #[error(transparent)]
    Pool(#[from] ModelError),
}

/// The inference service for `config`, or `None` when there is no model to serve.
/// Blocking (reads sidecars, may hash files): call it off the async workers.
pub fn build(config: &ModelsConfig) -> Result<Option<Arc<Inference>>, ModelsConfigError> {
    let catalog = Catalog::with_models_file(config.models_file.as_deref())?;
    let cache = match &config.models_dir {
        Some(dir) => ModelCache::new(dir),
        None => ModelCache::from_env()?,
    };
    let keep_alive = slmfn_models::source::parse_keep_alive(&config.model_keep_alive)?;
    let mut entries: Vec<ModelEntry> = Vec::new();
    for arg in &config.models {
        let mut entry = match arg.split_once('=') {
            Some((name, source)) => {
                let source: ModelSource = source.parse()?;
                // A source the catalog pins keeps its digest under the new name.
                let mut entry = catalog
                    .resolve(&source.to_string())
                    .unwrap_or_else(|_| ModelEntry::new(name, source));
                entry.name = name.to_string();
                entry
            }
            None => catalog.resolve(arg)?,
        };
        entry.keep_alive = keep_alive;
        entry.parallel = config.model_parallel.max(1);
        entry.queue_depth = config.model_queue_depth;
        entries.push(entry);
    }
    if let Some(file) = &config.models_file {
        for entry in ModelsFile::load(file)?.entries()? {
            if !entries.iter().any(|e| e.name == entry.name) {
                entries.push(entry);
            }
        }
    }
    if entries.is_empty() {
        // No flags: serve the default chat and embedding models that were pulled, else run
        // without models.
        let defaults = [catalog.default_entry(), catalog.default_embedding_entry()];
        for default in defaults.into_iter().flatten() {
            if cache.verify(default).is_ok() {
                entries.push(default.clone());
            } else {
                tracing::info!(
                    model = %default.name,
                    kind = %default.kind,
                    "default model not in the cache; it is not served (run `fn models pull {}`)",
                    default.name
                );
            }
        }
        if entries.is_empty() {
            tracing::info!("no model in the cache; inference is unavailable");
            return Ok(None);
        }
    }
    if config.model_dense_prefill {
        for entry in &mut entries {
            entry.dense_prefill = true;
        }
    }
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let unknown = |what, name: &str| ModelsConfigError::Unknown {
        what,
        name: name.to_string(),
        served: names.join(", "),
    };
    for p in &config.preload {
        if !names.contains(&p.as_str()) {
            return Err(unknown("preload", p));
        }
    }
    let first_of = |kind: ModelKind| {
        entries
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.name.clone())
    };
    let default = match &config.default_model {
        Some(d) if !names.contains(&d.as_str()) => return Err(unknown("default", d)),
        Some(d)
            if entries
                .iter()
                .any(|e| e.name == *d && e.kind != ModelKind::Chat) =>
        {
            return Err(ModelsConfigError::DefaultNotChat { name: d.clone() });
        }
        Some(d) => Some(d.clone()),
        None => first_of(ModelKind::Chat),
    };
    let default_embedding = first_of(ModelKind::Embedding);
    let specs = entries
        .iter()
        .map(|entry| {
            let mut spec = spec_for(&cache, entry)?;
            spec.preload |= config.preload.contains(&entry.name);
            tracing::info!(model = %spec.name, kind = %spec.kind, path = %spec.path.display(), preload = spec.preload, "serving model");
            Ok(spec)
        })
        .collect::<Result<Vec<_>, ModelsConfigError>>()?;
    let device = slmfn_models::device::default_device();
    tracing::info!(
        device = %slmfn_models::device::describe(&device),
        gpu_support = slmfn_models::device::gpu_support(),
        cpu_kernels = slmfn_models::cpu_kernels(),
        "inference device"
    );
    let pool = ModelPool::new(
        PoolConfig {
            memory_budget: config.models_memory_mb << 20,
            retry_after: RETRY_AFTER,
        },
        specs,
    )?;
    Ok(Some(Arc::new(
        Inference::new(Arc::new(pool), default).with_default_embedding_model(default_embedding),
    )))
}

/// A local file (or, for an embedding model, a directory) is used in place and must exist;
/// other sources must be in the cache, their digest verified.
fn spec_for(cache: &ModelCache, entry: &ModelEntry) -> Result<ModelSpec, ModelsConfigError> {
    match &entry.source {
        ModelSource::Local(path) if entry.sha256.is_none() => {
            let dir_ok = entry.kind == ModelKind::Embedding && path.is_dir();
            if !path.is_file() && !dir_ok {
                return Err(ModelsConfigError::MissingFile {
                    name: entry.name.clone(),
                    path: path.clone(),
                });
            }
            Ok(entry.to_spec(path))
        }
        _ => Ok(cache.verified_spec(entry)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, models: &[String]) -> ModelsConfig {
        ModelsConfig {
            models: models.to_vec(),
            models_file: None,
            models_dir: Some(dir.join("cache")),
            preload: Vec::new(),
            default_model: None,
            models_memory_mb: 1024,
            model_parallel: 1,
            model_queue_depth: 4,
            model_keep_alive: "5m".into(),
            model_dense_prefill: false,
        }
    }

    /// Files that only need to exist: nothing is loaded when the pool is built.
    fn files(dir: &std::path::Path) -> (String, String, String) {
        let gguf = dir.join("chat.gguf");
        let zip = dir.join("emb.zip");
        let model_dir = dir.join("emb-dir");
        std::fs::write(&gguf, b"").unwrap();
        std::fs::write(&zip, b"").unwrap();
        std::fs::create_dir(&model_dir).unwrap();
        let s = |p: std::path::PathBuf| p.display().to_string();
        (s(gguf), s(zip), s(model_dir))
    }

    #[test]
    fn kinds_come_from_the_sources_and_each_kind_has_its_default() {
        let dir = tempfile::tempdir().unwrap();
        let (gguf, zip, model_dir) = files(dir.path());
        let models = [
            format!("emb={zip}"),
            format!("chat={gguf}"),
            format!("folder={model_dir}"),
        ];
        let inference = build(&config(dir.path(), &models)).unwrap().unwrap();
        assert_eq!(inference.default_model(), Some("chat"));
        assert_eq!(inference.default_embedding_model(), Some("emb"));
        assert_eq!(inference.kind("emb"), Some(ModelKind::Embedding));
        assert_eq!(inference.kind("folder"), Some(ModelKind::Embedding));
        assert_eq!(inference.kind("chat"), Some(ModelKind::Chat));
        assert_eq!(
            inference.models_of_kind(ModelKind::Embedding),
            ["emb", "folder"]
        );

        // Only embedding models: no default chat model.
        let inference = build(&config(dir.path(), &[format!("emb={zip}")]))
            .unwrap()
            .unwrap();
        assert_eq!(inference.default_model(), None);
        assert_eq!(inference.default_embedding_model(), Some("emb"));
    }

    #[test]
    fn the_default_model_must_be_a_chat_model_and_files_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let (gguf, zip, _) = files(dir.path());
        let mut cfg = config(dir.path(), &[format!("emb={zip}"), format!("chat={gguf}")]);
        cfg.default_model = Some("emb".into());
        let e = build(&cfg).err().unwrap();
        assert!(matches!(e, ModelsConfigError::DefaultNotChat { .. }), "{e}");
        assert!(e.to_string().contains("is an embedding model"), "{e}");

        // A directory is fine for an embedding model, not for a chat model.
        let gguf_dir = dir.path().join("not-a-file.gguf");
        std::fs::create_dir(&gguf_dir).unwrap();
        let cfg = config(dir.path(), &[format!("x={}", gguf_dir.display())]);
        // A directory's kind is embedding whatever its name: it is served as one.
        let inference = build(&cfg).unwrap().unwrap();
        assert_eq!(inference.kind("x"), Some(ModelKind::Embedding));
        let cfg = config(
            dir.path(),
            &[format!("y={}/missing.zip", dir.path().display())],
        );
        let e = build(&cfg).err().unwrap();
        assert!(matches!(e, ModelsConfigError::MissingFile { .. }), "{e}");
    }
}
