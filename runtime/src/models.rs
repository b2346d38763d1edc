//! Builds the warm model pool from the runtime configuration: which models to serve (the
//! `--model` flags, a models file, else the default model when it is cached), where their
//! verified files are, and the pool settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use slmfn_models::source::{
    Catalog, ModelCache, ModelEntry, ModelSource, ModelsConfig as ModelsFile, SourceError,
};
use slmfn_models::{ModelPool, ModelSpec, PoolConfig};

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
        // No flags: serve the default model if it was pulled, else run without models.
        match catalog.default_entry() {
            Some(default) if cache.verify(default).is_ok() => entries.push(default.clone()),
            Some(default) => {
                tracing::info!(
                    model = %default.name,
                    "default model not in the cache; inference is unavailable (run `fn models pull`)"
                );
                return Ok(None);
            }
            None => return Ok(None),
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
    let default = match &config.default_model {
        Some(d) if !names.contains(&d.as_str()) => return Err(unknown("default", d)),
        Some(d) => d.clone(),
        None => names[0].to_string(),
    };
    let specs = entries
        .iter()
        .map(|entry| {
            let mut spec = spec_for(&cache, entry)?;
            spec.preload |= config.preload.contains(&entry.name);
            tracing::info!(model = %spec.name, path = %spec.path.display(), preload = spec.preload, "serving model");
            Ok(spec)
        })
        .collect::<Result<Vec<_>, ModelsConfigError>>()?;
    let device = slmfn_models::device::default_device();
    tracing::info!(
        device = %slmfn_models::device::describe(&device),
        gpu_support = slmfn_models::device::gpu_support(),
        "inference device"
    );
    let pool = ModelPool::new(
        PoolConfig {
            memory_budget: config.models_memory_mb << 20,
            retry_after: RETRY_AFTER,
        },
        specs,
    )?;
    Ok(Some(Arc::new(Inference::new(
        Arc::new(pool),
        Some(default),
    ))))
}

/// A local file is used in place (and must exist); other sources must be in the cache, their
/// digest verified.
fn spec_for(cache: &ModelCache, entry: &ModelEntry) -> Result<ModelSpec, ModelsConfigError> {
    match &entry.source {
        ModelSource::Local(path) if entry.sha256.is_none() => {
            if !path.is_file() {
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
