//! `/fn/{name}[/{*path}]`: HTTP request → the function's `handle` → HTTP response.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use crate::host;

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHORIZATION,
];

pub(super) async fn invoke_root(
    state: State<AppState>,
    name: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(super::error::path_rejection)?;
    invoke(state, name, String::new(), req).await
}

pub(super) async fn invoke_path(
    state: State<AppState>,
    names: Result<Path<(String, String)>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path((name, path)) = names.map_err(super::error::path_rejection)?;
    invoke(state, name, path, req).await
}

async fn invoke(
    State(state): State<AppState>,
    name: String,
    path: String,
    req: Request,
) -> Result<Response, ApiError> {
    // Admitted (a slot and memory held) before the body is read: a refused call costs no
    // upload, and waiting calls hold no bodies.
    let admitted = match state.host.admit(&name).await {
        Err(host::HostError::FunctionNotFound(_)) if !state.readiness.functions_loaded() => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the runtime is starting: function {name:?} may be one still loading"),
            )
            .retry_after(1));
        }
        admitted => admitted?,
    };
    let (parts, body) = req.into_parts();
    let body = super::body::read(
        &parts.headers,
        body,
        state.config.max_body_bytes,
        state.config.body_timeout(),
    )
    .await?;
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| !HOP_BY_HOP.contains(k))
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let request = host::Request {
        method: parts.method.as_str().to_string(),
        path: format!("/{path}"),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
    };
    let response = state.host.invoke_admitted(admitted, request).await?;
    into_http(&name, response)
}

fn into_http(name: &str, response: host::Response) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| (100..=599).contains(&s.as_u16()) && !s.is_informational())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "function {name:?} returned invalid HTTP status {}",
                    response.status
                ),
            )
        })?;
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = status;
    for (k, v) in response.headers {
        match (
            HeaderName::try_from(k.as_str()),
            HeaderValue::from_bytes(&v),
        ) {
            (Ok(k), Ok(v)) if !HOP_BY_HOP.contains(&k) && k != header::CONTENT_LENGTH => {
                out.headers_mut().append(k, v);
            }
            _ => tracing::debug!(function = name, header = %k, "dropped invalid response header"),
        }
    }
    Ok(out)
}
