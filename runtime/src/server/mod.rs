//! The HTTP server: axum routes only (invoke, events, admin, health, the OpenAI-compatible
//! API, MCP, metrics). Handlers translate HTTP to host calls and host errors to [`ApiError`]s; they hold
//! no logic of their own.

mod admin;
mod admin_models;
mod auth;
mod body;
mod error;
mod events;
mod health;
mod invoke;
mod mcp;
mod metrics;
mod openai;
mod readiness;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{any, get, post};

pub use error::ApiError;
pub use readiness::Readiness;

use crate::config::RuntimeConfig;
use crate::host::Host;

/// The body limit of the admin routes other than deploy (a rollback's `{"revision"}`).
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Slack for multipart framing and the manifest on top of the component size limit.
const MULTIPART_OVERHEAD: usize = 1024 * 1024;

/// State shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The WASM host.
    pub host: Arc<Host>,
    /// The runtime settings.
    pub config: Arc<RuntimeConfig>,
    /// Whether `/readyz` is green.
    pub readiness: Arc<Readiness>,
    /// The model pool's async face; `None` when no model is configured.
    pub inference: Option<Arc<crate::inference::Inference>>,
    /// The CloudEvents dispatcher.
    pub events: Arc<crate::delivery::Events>,
}

/// All routes. Serve with [`crate::connections::serve`] (or anything that sets `ConnectInfo<SocketAddr>`: the admin
/// and OpenAI APIs' loopback check needs the peer address). The router owns the process's
/// [`crate::metrics::Metrics`]: build it once.
pub fn router(state: AppState) -> Router {
    let metrics = Arc::new(crate::metrics::Metrics::new(
        state
            .inference
            .as_ref()
            .map(|i| (i.metrics(), i.pool().clone())),
        &[
            state.host.toolbox().metrics(),
            state.events.metrics(),
            &state.host.slot_metrics(),
        ],
        state.config.knative_labels(),
    ));
    let upload_limit = state
        .config
        .max_upload_bytes
        .saturating_add(MULTIPART_OVERHEAD);
    let admin = Router::new()
        .route("/functions", get(admin::list))
        .route(
            "/functions/{name}",
            post(admin::deploy)
                .layer(DefaultBodyLimit::max(upload_limit))
                .get(admin::get)
                .delete(admin::delete),
        )
        .route("/functions/{name}/revisions", get(admin::revisions))
        .route("/functions/{name}/rollback", post(admin::rollback))
        .route("/quarantine", get(admin::quarantine))
        .route("/models", get(admin_models::list))
        .route("/models/{name}/load", post(admin_models::load))
        .route("/models/{name}/unload", post(admin_models::unload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::admin,
        ))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .layer(axum::middleware::map_response(error::json_rejections));
    let functions = Router::new()
        .route("/fn/{name}", any(invoke::invoke_root))
        .route("/fn/{name}/", any(invoke::invoke_root))
        .route("/fn/{name}/{*path}", any(invoke::invoke_path))
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), metrics.clone()),
            metrics::count_invocations,
        ));
    let events = post(events::receive).fallback(events::method_not_allowed);
    let traced = Router::new()
        .route("/", events.clone())
        .route("/events", events)
        .route(
            "/metrics",
            get(metrics::scrape)
                .with_state(metrics.clone())
                .layer(axum::middleware::map_response(error::json_rejections)),
        )
        .merge(functions)
        .merge(openai::routes(&state, metrics))
        .merge(mcp::routes(&state))
        .nest("/admin", admin)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    // Probes stay out of the request trace: Knative sends them every second, and a 503 from
    // `/readyz` while models load is the expected answer, not a server error to log.
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(axum::middleware::map_response(error::json_rejections))
        .merge(traced)
        .with_state(state)
}
