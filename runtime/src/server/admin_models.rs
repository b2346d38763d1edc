//! `/admin/models`: the warm pool's models with their state; load and unload on demand.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::inference::Inference;

fn service(state: &AppState) -> Result<&Inference, ApiError> {
    state.inference.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no models are configured in this runtime",
        )
    })
}

/// `GET /admin/models`: every model with its kind (chat/embedding), state
/// (unloaded/loading/idle/busy), memory, sessions, queue, load counts; plus the default models
/// and the pool's memory use and budget.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let inference = service(&state)?;
    let stats = inference.stats();
    Ok(Json(json!({
        "default_model": inference.default_model(),
        "default_embedding_model": inference.default_embedding_model(),
        "device": slmfn_models::device::describe(&slmfn_models::device::default_device()),
        "memory_used_bytes": stats.memory_used,
        "memory_budget_bytes": stats.memory_budget,
        "models": inference.status(),
    })))
}

/// `POST /admin/models/{name}/load`: loads the model (if needed) and waits until it is ready.
pub(super) async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    service(&state)?.load(&name).await?;
    Ok(Json(json!({ "loaded": name })))
}

/// `POST /admin/models/{name}/unload`: unloads the model if it is idle (409 while in use).
pub(super) async fn unload(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let inference = service(&state)?;
    let was_loaded = inference
        .status()
        .iter()
        .any(|m| m.name == name && m.state != slmfn_models::ModelState::Unloaded);
    if inference.unload(&name)? || !was_loaded {
        Ok(Json(json!({ "unloaded": name })))
    } else {
        Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("model {name:?} is in use; it is never unloaded while serving"),
        ))
    }
}
