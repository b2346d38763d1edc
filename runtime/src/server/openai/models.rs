//! `GET /v1/models[/{model}]`: the configured models with their pool state; and
//! `POST /v1/embeddings`, which answers an honest error until an embedding model exists.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use slmfn_models::{ModelState, ModelStatus};

use super::wire::EmbeddingRequest;
use super::{OpenAiJson, device, error, invalid, resolve_model};
use crate::inference::Inference;
use crate::server::AppState;
use crate::server::error::ApiError;

/// Every configured model (an empty list when there are none).
pub(in crate::server) async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = match &state.inference {
        None => Vec::new(),
        Some(inference) => inference
            .pool()
            .status()
            .iter()
            .map(|s| model_json(inference, s))
            .collect(),
    };
    Json(json!({ "object": "list", "data": data }))
}

pub(in crate::server) async fn retrieve(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("the model {model:?} does not exist"),
            Some("model_not_found"),
            Some("model"),
        )
    };
    let inference = state.inference.as_ref().ok_or_else(not_found)?;
    let name = resolve_model(inference, Some(&model))?;
    let status = inference
        .pool()
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(not_found)?;
    Ok(Json(model_json(inference, &status)))
}

/// OpenAI's model object plus the pool's view of it.
fn model_json(inference: &Inference, s: &ModelStatus) -> Value {
    // OpenAI's `created` is when the model was made; the file's time is the nearest we know.
    let created = inference
        .pool()
        .spec(&s.name)
        .ok()
        .and_then(|spec| std::fs::metadata(&spec.path).ok())
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    json!({
        "id": s.name,
        "object": "model",
        "created": created,
        "owned_by": "slmfn",
        "default": inference.default_model() == Some(s.name.as_str()),
        "state": match s.state {
            ModelState::Unloaded => "unloaded",
            ModelState::Loading => "loading",
            ModelState::Idle => "idle",
            ModelState::Busy => "busy",
        },
        "device": device(),
        "memory_bytes": s.memory_bytes,
        "sessions": s.parallel,
        "sessions_busy": s.busy_sessions,
        "queued": s.queued,
    })
}

/// No embedding model is served yet: every request gets a clear error, never made-up vectors.
/// A generative model named here is 400 (it exists but cannot embed); anything else is 404.
pub(in crate::server) async fn embeddings(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<EmbeddingRequest>,
) -> Result<Json<Value>, ApiError> {
    match &req.input {
        None | Some(Value::Null) => return Err(invalid("input", "input is required")),
        Some(Value::String(_) | Value::Array(_)) => {}
        Some(_) => {
            return Err(invalid(
                "input",
                "input must be a string, a list of strings or a list of token ids",
            ));
        }
    }
    let generative = |m: &str| state.inference.as_ref().is_some_and(|i| i.has_model(m));
    Err(match req.model.as_deref() {
        Some(m) if m != "default" && generative(m) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "model {m:?} is not an embedding model (it generates text); \
                 no embedding models are configured in this runtime"
            ),
            Some("model_not_embedding"),
            Some("model"),
        ),
        Some(m) if m != "default" => error(
            StatusCode::NOT_FOUND,
            format!(
                "the model {m:?} does not exist: no embedding models are configured in this runtime"
            ),
            Some("model_not_found"),
            Some("model"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "no embedding models are configured in this runtime",
            Some("model_not_found"),
            Some("model"),
        ),
    })
}
