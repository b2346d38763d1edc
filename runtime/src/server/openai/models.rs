//! `GET /v1/models[/{model}]`: the configured models with their kind and pool state.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use slmfn_models::{ModelKind, ModelStatus};

use super::{device, error, resolve_model};
use crate::inference::Inference;
use crate::server::AppState;
use crate::server::error::ApiError;

/// OpenAI's model object plus the pool's view of it.
#[derive(Debug, Serialize)]
pub(super) struct ModelObject {
    id: String,
    object: &'static str,
    /// OpenAI's `created` is when the model was made; the file's time is the nearest we know.
    created: u64,
    owned_by: &'static str,
    kind: ModelKind,
    /// One of the runtime's default models.
    default: bool,
    state: &'static str,
    device: String,
    memory_bytes: u64,
    sessions: usize,
    sessions_busy: usize,
    queued: usize,
}

/// OpenAI's list object.
#[derive(Debug, Serialize)]
pub(super) struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

/// Every configured model (an empty list when there are none).
pub(in crate::server) async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let data = match &state.inference {
        None => Vec::new(),
        Some(inference) => {
            let created = inference.file_times().await;
            inference
                .status()
                .iter()
                .map(|s| model_object(inference, s, &created))
                .collect()
        }
    };
    Json(ModelList {
        object: "list",
        data,
    })
}

pub(in crate::server) async fn retrieve(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            format!("the model {model:?} does not exist"),
            Some("model_not_found"),
            Some("model"),
        )
    };
    let inference = state.inference.as_ref().ok_or_else(not_found)?;
    let name = match model.as_str() {
        "default" => resolve_model(inference, None)?,
        _ => model.clone(),
    };
    let status = inference
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(not_found)?;
    let created = inference.file_times().await;
    Ok(Json(model_object(inference, &status, &created)))
}

fn model_object(
    inference: &Inference,
    s: &ModelStatus,
    created: &HashMap<String, u64>,
) -> ModelObject {
    ModelObject {
        id: s.name.clone(),
        object: "model",
        created: created.get(&s.name).copied().unwrap_or(0),
        owned_by: "slmfn",
        kind: s.kind,
        default: inference.default_model() == Some(s.name.as_str())
            || inference.default_embedding_model() == Some(s.name.as_str()),
        state: s.state.as_str(),
        device: device(),
        memory_bytes: s.memory_bytes,
        sessions: s.parallel,
        sessions_busy: s.busy_sessions,
        queued: s.queued,
    }
}
