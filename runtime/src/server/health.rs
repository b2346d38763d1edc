//! `/healthz` (liveness: the process answers) and `/readyz` (readiness: the registry is open
//! and every current revision is loaded; false again while draining on shutdown).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.reason() {
        None => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        ),
    }
}
