//! Builds the warm model pool from the runtime configuration.

use std::sync::Arc;
use std::time::Duration;

use slmfn_models::{KeepAlive, ModelPool, ModelSpec, PoolConfig};

use crate::config::ModelsConfig;
use crate::inference::{Inference, ModelError};

/// How long a caller refused with `overloaded` is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why the models configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelsConfigError {
    /// A preloaded or default model is not configured.
    #[error("{what} model {name:?} is not configured (configured: {configured})")]
    Unknown {
        /// `preload` or `default`.
        what: &'static str,
        /// The name.
        name: String,
        /// The configured names.
        configured: String,
    },
    /// `--model-keep-alive` is not a number of seconds, `0` or `forever`.
    #[error("invalid --model-keep-alive {0:?}: use seconds, 0 or forever")]
    KeepAlive(String),
    /// The pool refused the specs.
    #[error(transparent)]
    Pool(#[from] ModelError),
}

/// The inference service for `config`, or `None` when no model is configured.
pub fn build(config: &ModelsConfig) -> Result<Option<Arc<Inference>>, ModelsConfigError> {
    if config.models.is_empty() {
        return Ok(None);
    }
    let names: Vec<&str> = config.models.iter().map(|(n, _)| n.as_str()).collect();
    let unknown = |what, name: &str| ModelsConfigError::Unknown {
        what,
        name: name.to_string(),
        configured: names.join(", "),
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
    let keep_alive = match config.model_keep_alive.as_str() {
        "forever" => KeepAlive::Forever,
        s => KeepAlive::For(Duration::from_secs(
            s.parse()
                .map_err(|_| ModelsConfigError::KeepAlive(s.to_string()))?,
        )),
    };
    let specs = config
        .models
        .iter()
        .map(|(name, path)| {
            let mut spec = ModelSpec::new(name.clone(), path.clone());
            spec.keep_alive = keep_alive;
            spec.preload = config.preload.contains(name);
            spec.parallel = config.model_parallel.max(1);
            spec.queue_depth = config.model_queue_depth;
            spec
        })
        .collect();
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
