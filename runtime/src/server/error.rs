//! One `ApiError` for every route: a status and a JSON `{"error": message}` body; on the
//! OpenAI-compatible routes the body takes OpenAI's shape instead,
//! `{"error": {"message", "type", "param", "code"}}` (see [`ApiError::openai`]), because their
//! clients parse it.
//!
//! Statuses follow the Knative eventing rules too: 4xx means "don't retry", 429/503 with
//! `Retry-After` means "retry". Internal detail is logged once here, never sent to clients.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use slmfn_models::ErrorClass;

use crate::host::{GuestError, HostError};
use crate::inference::ModelError;
use crate::manifest::ManifestError;
use crate::registry::RegistryError;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
    /// `Some` for OpenAI's error shape.
    openai: Option<OpenAiDetail>,
}

/// The fields OpenAI clients read besides the message.
#[derive(Debug)]
struct OpenAiDetail {
    code: Option<&'static str>,
    param: Option<&'static str>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            openai: None,
        }
    }

    /// Answers in OpenAI's error shape, with a machine-readable `code` (e.g. `model_not_found`)
    /// and the request field at fault (`param`). The `type` follows from the status.
    pub fn openai(mut self, code: Option<&'static str>, param: Option<&'static str>) -> Self {
        self.openai = Some(OpenAiDetail { code, param });
        self
    }

    /// Adds `Retry-After` (seconds).
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body (also sent as the last event of a stream that fails midway).
    pub(super) fn body(&self) -> serde_json::Value {
        match &self.openai {
            None => serde_json::json!({ "error": self.message }),
            Some(detail) => serde_json::json!({ "error": {
                "message": self.message,
                "type": openai_type(self.status),
                "param": detail.param,
                "code": detail.code,
            }}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "request failed");
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Makes axum's own rejections (a multipart body without a boundary, a path that does not
/// parse, a method the route lacks), which answer `text/plain` or nothing, JSON like every
/// other error; their headers (`Allow`) stay. For routes whose every answer is ours: never
/// around a guest's response.
pub(super) async fn json_rejections(response: Response) -> Response {
    rejections_as(response, false).await
}

/// [`json_rejections`] in OpenAI's error shape, for the `/v1` routes.
pub(super) async fn openai_rejections(response: Response) -> Response {
    rejections_as(response, true).await
}

async fn rejections_as(response: Response, openai: bool) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let error = ApiError::new(status, message);
    let error = if openai {
        error.openai(None, None)
    } else {
        error
    };
    let mut answer = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// A path that does not parse (not UTF-8 once percent-decoded), as JSON: for routes whose
/// answers are a guest's, where [`json_rejections`] cannot sit.
pub(super) fn path_rejection(e: axum::extract::rejection::PathRejection) -> ApiError {
    ApiError::new(e.status(), e.body_text())
}

/// OpenAI's error `type` for a status.
fn openai_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_server_error() => "server_error",
        _ => "invalid_request_error",
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::FunctionNotFound(_) | RegistryError::RevisionNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            RegistryError::NoEarlierRevision(_) => StatusCode::CONFLICT,
            _ => return internal(&e),
        };
        ApiError::new(status, e.to_string())
    }
}

/// A 500 whose detail (storage errors, host bugs) goes to the log, not to the client.
fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "internal error");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; the runtime's log says why",
    )
}

/// A model error by its class ([`ModelError::class`]), for the admin and OpenAI APIs alike;
/// an internal failure's detail is logged, not sent.
impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let status = match e.class() {
            ErrorClass::NotFound => StatusCode::NOT_FOUND,
            ErrorClass::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ErrorClass::InvalidInput | ErrorClass::ContextLengthExceeded => StatusCode::BAD_REQUEST,
            ErrorClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            ModelError::ModelNotFound(m) => format!("the model {m:?} does not exist"),
            ModelError::LoadFailed { model, reason } => {
                tracing::error!(model, reason, "model load failed");
                format!("the model {model:?} failed to load; the runtime's log says why")
            }
            e if e.class() == ErrorClass::Internal => {
                tracing::error!(error = %e, "inference failed");
                "inference failed; the runtime's log says why".to_string()
            }
            e => e.to_string(),
        };
        let error = ApiError::new(status, message);
        match e.class() {
            ErrorClass::Overloaded(retry_after) => error.retry_after(
                u32::try_from(retry_after.as_secs_f64().ceil() as u64)
                    .unwrap_or(u32::MAX)
                    .max(1),
            ),
            _ => error,
        }
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let status = match &e {
            HostError::FunctionNotFound(_) => StatusCode::NOT_FOUND,
            HostError::Manifest(_)
            | HostError::NotAnAgent(_)
            | HostError::NameMismatch { .. }
            | HostError::InvalidComponent(_) => StatusCode::BAD_REQUEST,
            HostError::Registry(_) => {
                let HostError::Registry(r) = e else {
                    unreachable!()
                };
                return r.into();
            }
            HostError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            HostError::Guest(GuestError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            HostError::Guest(GuestError::NotFound(_)) => StatusCode::NOT_FOUND,
            HostError::Guest(GuestError::Overloaded(ms)) => {
                let seconds = ms.div_ceil(1000).max(1);
                return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
                    .retry_after(seconds);
            }
            HostError::OverMemoryBudget { .. } => StatusCode::BAD_REQUEST,
            HostError::Busy { .. } | HostError::QueueFull { .. } | HostError::MemoryBusy { .. } => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    .retry_after(1);
            }
            HostError::Internal(_) => return internal(&e),
            // The guest's own failure, for its developer: its text is theirs to read.
            HostError::Guest(GuestError::Internal(_)) | HostError::Trap { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}
