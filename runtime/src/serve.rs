//! The process lifecycle: open the registry (fail fast if another runtime holds it), bind,
//! load current revisions in the background while `/readyz` says so, serve, and on
//! SIGTERM/SIGINT stop accepting, drain in-flight requests (bounded), flush and exit.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::RuntimeConfig;
use crate::host::{Host, HostError};
use crate::registry::{Registry, RegistryError};
use crate::server::{self, AppState, Readiness};

/// Why the runtime could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The registry could not be opened (in use, unreadable).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The host could not start.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The tools configuration is unusable.
    #[error(transparent)]
    Tools(#[from] crate::tools::ToolsConfigError),
    /// The models configuration is unusable.
    #[error(transparent)]
    Models(#[from] crate::model_setup::ModelsConfigError),
    /// A setting is out of range or unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `K_SINK` or `K_CE_OVERRIDES` is unusable.
    #[error(transparent)]
    Sink(#[from] crate::events::sink::SinkError),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (not a `source`: the message already says it).
        error: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the runtime until SIGTERM/SIGINT, then drains in-flight requests.
pub async fn serve(config: RuntimeConfig) -> Result<(), ServeError> {
    tracing::info!(config = %config.summary(), version = env!("CARGO_PKG_VERSION"), "starting slmfn runtime");
    if config.max_event_bytes < crate::events::MIN_EVENT_LIMIT {
        return Err(ServeError::Config(format!(
            "--max-event-bytes {} is below {} (Knative's data plane requires 64 KiB events)",
            config.max_event_bytes,
            crate::events::MIN_EVENT_LIMIT
        )));
    }
    let sink = match &config.k_sink {
        Some(url) => Some(Arc::new(crate::events::sink::Sink::new(
            url,
            config.k_ce_overrides.as_deref(),
        )?)),
        None => None,
    };
    warn_if_open(&config);
    std::fs::create_dir_all(&config.data_dir)?;
    let dir = config.data_dir.clone();
    let registry = tokio::task::spawn_blocking(move || Registry::open(&dir))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let models = config.models.clone();
    let inference = tokio::task::spawn_blocking(move || crate::model_setup::build(&models))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let tools = match &config.tools_file {
        Some(path) => crate::tools::ToolsConfig::read(path)?,
        None => crate::tools::ToolsConfig::default(),
    };
    let toolbox = Arc::new(tools.build()?);
    let limits = crate::host::HostLimits {
        max_waiting: config.max_waiting,
        guest_memory_mb: config.guest_memory_mb,
    };
    let host = Host::new(registry.clone(), sink, inference.clone(), toolbox, limits)?;
    let events = Arc::new(crate::delivery::Events::new(
        host.clone(),
        crate::delivery::Window {
            age: config.event_dedupe_window,
            count: config.event_dedupe_max,
        },
    )?);
    let addr = config.listen_addr();
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| ServeError::Bind { addr, error })?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "listening");

    let readiness = Arc::new(Readiness::not_ready("loading functions"));
    let state = AppState {
        host: host.clone(),
        config: Arc::new(config),
        readiness: readiness.clone(),
        inference: inference.clone(),
        events: events.clone(),
    };
    let loader = {
        let (host, readiness) = (host.clone(), readiness.clone());
        let functions_dir = state.config.functions_dir.clone();
        tokio::spawn(async move {
            if let Err(e) = host.load_all().await {
                tracing::error!(error = %e, "loading functions failed");
                readiness.set_not_ready(format!("loading functions failed: {e}"));
                return;
            }
            if let Some(dir) = functions_dir {
                match host.install_dir(&dir).await {
                    Ok(r) => {
                        tracing::info!(dir = %dir.display(), functions = r.functions, compiled = r.compiled, "serving the functions dir")
                    }
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "the functions dir cannot be served");
                        readiness.set_not_ready(format!("the functions dir cannot be served: {e}"));
                        return;
                    }
                }
            }
            readiness.set_functions_loaded();
            if let Some(inference) = inference {
                readiness.set_not_ready("loading preloaded models");
                let pool = inference.pool().clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || pool.preload()).await {
                    Ok(Ok(())) => {
                        tracing::info!(secs = started.elapsed().as_secs_f64(), "preloaded models")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "preloading models failed");
                        readiness.set_not_ready(format!("preloading models failed: {e}"));
                        return;
                    }
                    Err(e) => {
                        readiness.set_not_ready(format!("preloading models failed: {e}"));
                        return;
                    }
                }
            }
            tracing::info!("ready");
            readiness.set_ready();
        })
    };

    let drain = state.config.drain_timeout();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = crate::connections::ConnectionLimits {
        header_timeout: state.config.header_timeout(),
    };
    let app = server::router(state);
    let mut server = tokio::spawn(async move {
        crate::connections::serve(listener, app, limits, async move {
            let _ = stop_rx.await;
        })
        .await;
        Ok::<(), std::io::Error>(())
    });
    tokio::select! {
        result = &mut server => {
            loader.abort();
            result.map_err(|e| std::io::Error::other(e.to_string()))??;
            events.flush().await;
    registry.flush().await?;
            return Ok(());
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, drain_secs = drain.as_secs(), "shutting down: draining in-flight requests");
        }
    }
    loader.abort();
    readiness.set_not_ready("shutting down");
    let _ = stop_tx.send(());
    match tokio::time::timeout(drain, &mut server).await {
        Ok(result) => {
            result.map_err(|e| std::io::Error::other(e.to_string()))??;
            tracing::info!("drained");
        }
        Err(_) => tracing::warn!("drain timeout reached; exiting with requests in flight"),
    }
    events.flush().await;
    registry.flush().await?;
    Ok(())
}

/// Says loudly when the protected APIs answer nobody or when the network may reach a runtime
/// without a token.
fn warn_if_open(config: &RuntimeConfig) {
    if config.token.is_some() {
        return;
    }
    if config.cluster_mode() {
        tracing::warn!(
            "cluster mode without SLMFN_TOKEN: the admin API and /v1 are OFF (every request comes \
             through the queue-proxy on 127.0.0.1, so loopback proves nothing); set SLMFN_TOKEN \
             to use them"
        );
    } else if !config.bind.is_loopback() {
        tracing::warn!(
            bind = %config.bind,
            "NO TOKEN: the admin API and /v1 answer loopback clients only, and a proxy on this \
             host would make every client look local; set SLMFN_TOKEN (and --cluster behind a \
             proxy)"
        );
    }
}

/// Resolves on SIGTERM (Knative/Kubernetes) or SIGINT (Ctrl-C), naming which.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
