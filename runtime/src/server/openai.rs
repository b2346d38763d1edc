//! The OpenAI-compatible API on the warm model pool: `POST /v1/chat/completions`,
//! `POST /v1/completions` (both whole or streamed as server-sent events), `POST /v1/embeddings`,
//! `GET /v1/models` and `GET /v1/models/{model}`. Official OpenAI clients work against it with
//! `base_url = <runtime>/v1`.
//!
//! A thin adapter, like the WIT one in [`crate::host`]: it parses OpenAI's request shapes, fills
//! in the model's defaults through [`Inference::sampling`], starts a [`Generation`] and maps the
//! result and the errors back. The pool does the work on its own threads.
//!
//! # Policy
//!
//! - **Models.** `model` names a configured model; omitted or `"default"` means the runtime's
//!   default chat model (for `/v1/embeddings`: its default embedding model, the first one
//!   served). There is no per-function allow-list here: the API is for operators and their
//!   tools, so it is guarded like the admin API. `/v1/models` lists both kinds (`kind`: `chat`
//!   or `embedding`).
//! - **Embeddings.** `POST /v1/embeddings` takes `input` (a string or a list of strings, at
//!   most 2048), `model` and `encoding_format` (`float`, or `base64`: little-endian f32, what
//!   the official Python client asks for by default) and answers `data[{object: "embedding",
//!   index, embedding}]` with `usage {prompt_tokens, total_tokens}`. Vectors are mean-pooled
//!   and L2-normalized (unit length: a dot product is the cosine). A text over the model's 512
//!   tokens is a 400 naming it (never truncated); token-id inputs and a `dimensions` other than
//!   the model's are 400 `unsupported_parameter`.
//! - **Structured output.** `response_format` `json_object` (any JSON object) or `json_schema`
//!   (`json_schema.schema`, enforced whether `strict` or not) constrains the answer by
//!   construction (llguidance); a schema it cannot compile is a 400 naming the problem. An
//!   answer cut by the token bound ends with `finish_reason: "length"` and is incomplete.
//! - **Tools.** `tools` (`type: function`) and `tool_choice` (`auto`, the default; `required`;
//!   a named function; `none`) list the tools in the system prompt and constrain the answer to
//!   a call of one of them with arguments valid against its `parameters` (or, under `auto`, to
//!   text); a call comes back as `message.tool_calls` with `finish_reason: "tool_calls"`,
//!   streamed as one `tool_calls` delta. One call per answer. History may carry assistant
//!   `tool_calls` and `tool` messages (with `tool_call_id`). See [`tools`].
//! - **Auth.** [`super::auth::openai`]: with `SLMFN_TOKEN`, `Authorization: Bearer <token>`
//!   (the client's API key); without, loopback clients only.
//! - **Errors** have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for
//!   invalid or unsupported parameters (we refuse rather than silently ignore a parameter
//!   that would change the answer: `n > 1`, penalties, logprobs, `response_format` with tools),
//!   400 `model_not_embedding` / `model_not_chat` for a model of the other kind, 404 for an
//!   unknown model, 413 for a body over [`MAX_BODY_BYTES`], 429 with `Retry-After`
//!   when the model's queue is full, 503 when no model is configured, 504 when a generation
//!   runs past [`GENERATION_TIMEOUT`]. Internal detail (paths, candle errors) goes to the log,
//!   never into a body.
//! - **Cancellation.** Dropping the [`Generation`] cancels it: a client that disconnects while
//!   waiting for a whole completion, or in the middle of a stream, frees its session at the next
//!   token.

mod embeddings;
#[cfg(test)]
mod fuzz_tests;
mod generate;
mod models;
mod responses;
mod tools;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::inference::{Asker, ChoiceError, Generation, Inference, ModelError};
use crate::metrics::Metrics;
use slmfn_models::{ErrorClass, ModelKind};

/// Largest accepted request body. A long chat of a small model's context (8k tokens, about
/// 32 KiB of text) fits many times over; more is a mistake or an attack.
pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one generation may run, queue and model load included: Knative's default request
/// timeout, past which the answer has nowhere to go anyway.
pub(super) const GENERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Where generation runs, as reported by `/v1/models`: `cpu`, or `cuda:N` in a `cuda` build
/// with a usable GPU.
pub(super) fn device() -> String {
    slmfn_models::device::describe(&slmfn_models::device::default_device())
}

/// The `/v1` routes, guarded by [`super::auth::openai`] and counted in `metrics`.
pub(super) fn routes(state: &AppState, metrics: Arc<Metrics>) -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{model}", get(models::retrieve))
        .route("/v1/{*rest}", any(no_route))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::openai,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            super::metrics::count_openai_requests,
        ))
        .layer(axum::middleware::map_response(
            super::error::openai_rejections,
        ))
}

async fn no_route() -> ApiError {
    error(
        StatusCode::NOT_FOUND,
        "no such OpenAI-compatible endpoint: this runtime serves /v1/chat/completions, \
         /v1/completions, /v1/embeddings and /v1/models",
        None,
        None,
    )
}

/// An error in OpenAI's shape.
pub(super) fn error(
    status: StatusCode,
    message: impl Into<String>,
    code: Option<&'static str>,
    param: Option<&'static str>,
) -> ApiError {
    ApiError::new(status, message).openai(code, param)
}

/// A 400 for a request field.
pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        message,
        Some("invalid_value"),
        Some(param),
    )
}

/// A 400 for a parameter this runtime cannot honour.
pub(super) fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        message,
        Some("unsupported_parameter"),
        Some(param),
    )
}

/// The inference service, or 503 when the runtime has no models.
pub(super) fn service(state: &AppState) -> Result<&Arc<Inference>, ApiError> {
    state.inference.as_ref().ok_or_else(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no models are configured in this runtime (start it with --model NAME=PATH)",
            Some("no_models"),
            None,
        )
    })
}

/// The chat model a request uses ([`Inference::choose`] for the API): the one it names, or
/// the runtime's default for none or `"default"`. Unknown names are 404, an embedding model
/// 400 `model_not_chat`.
pub(super) fn resolve_model(
    inference: &Inference,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    inference
        .choose(Asker::Api, requested, ModelKind::Chat)
        .map_err(|e| match e {
            ChoiceError::NotServed(model) => model_not_found(inference, &model),
            e @ ChoiceError::WrongKind { .. } => match e.wrong_kind() {
                Some(wrong) => model_error(wrong),
                None => invalid("model", e.to_string()),
            },
            _ => invalid(
                "model",
                "no model named and the runtime has no default model",
            ),
        })
}

fn model_not_found(inference: &Inference, model: &str) -> ApiError {
    let configured: Vec<String> = inference.status().into_iter().map(|s| s.name).collect();
    error(
        StatusCode::NOT_FOUND,
        format!(
            "the model {model:?} does not exist (configured: {})",
            configured.join(", ")
        ),
        Some("model_not_found"),
        Some("model"),
    )
}

/// A model error in OpenAI's shape: the status of its class ([`ApiError`]'s `From`), with
/// OpenAI's `code` and `param` for it.
pub(super) fn model_error(e: ModelError) -> ApiError {
    let (code, param) = match (&e, e.class()) {
        (ModelError::WrongModelKind { wanted, .. }, _) => {
            let (code, hint) = match wanted {
                slmfn_models::ModelKind::Chat => {
                    ("model_not_chat", " (use /v1/embeddings with it)")
                }
                slmfn_models::ModelKind::Embedding => ("model_not_embedding", ""),
            };
            return ApiError::new(StatusCode::BAD_REQUEST, format!("{e}{hint}"))
                .openai(Some(code), Some("model"));
        }
        (_, ErrorClass::NotFound) => (Some("model_not_found"), Some("model")),
        (_, ErrorClass::Overloaded(_)) => (Some("model_overloaded"), None),
        (_, ErrorClass::ContextLengthExceeded) => {
            (Some("context_length_exceeded"), Some("messages"))
        }
        (_, ErrorClass::Timeout) => (Some("timeout"), None),
        (_, ErrorClass::InvalidInput) => (Some("invalid_value"), None),
        (_, ErrorClass::Unavailable) => (Some("model_unavailable"), None),
        (ModelError::LoadFailed { .. }, ErrorClass::Internal) => (Some("model_load_failed"), None),
        (_, ErrorClass::Internal) => (None, None),
    };
    ApiError::from(e).openai(code, param)
}

/// A generation that stopped before its end: 504 when it ran past its deadline.
pub(super) fn cancelled(generation: &Generation) -> ApiError {
    if generation.deadline_passed() {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the generation did not finish within {} s",
                GENERATION_TIMEOUT.as_secs()
            ),
            Some("timeout"),
            None,
        )
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the generation was cancelled",
            Some("cancelled"),
            None,
        )
    }
}

/// A JSON body parsed with OpenAI-shaped errors: 413 past [`MAX_BODY_BYTES`], 400 for bad JSON.
/// Any `Content-Type` is accepted (curl users often forget it).
pub(super) struct OpenAiJson<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<AppState> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let timeout = state.config.body_timeout();
        let bytes = super::body::read(&parts.headers, body, MAX_BODY_BYTES, timeout)
            .await
            .map_err(|e| {
                let code =
                    matches!(e, super::body::BodyError::TooLarge(_)).then_some("request_too_large");
                error(e.status(), e.to_string(), code, None)
            })?;
        serde_json::from_slice(&bytes).map(OpenAiJson).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid JSON body: {e}"),
                Some("invalid_json"),
                None,
            )
        })
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
