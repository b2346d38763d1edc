//! `/fn/{name}[/{*path}]`: HTTP request → the function's `handle` → HTTP response.

use axum::body::{Body, to_bytes};
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
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    invoke(state, name, String::new(), req).await
}

pub(super) async fn invoke_path(
    state: State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    invoke(state, name, path, req).await
}

async fn invoke(
    State(state): State<AppState>,
    name: String,
    path: String,
    req: Request,
) -> Result<Response, ApiError> {
    if !state.host.is_loaded(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("function {name:?} not found"),
        ));
    }
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes;
    let body = to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    })?;
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
    let response = state.host.invoke(&name, request).await?;
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
