//! `GET /metrics` (Prometheus scrapes it, so it is unauthenticated; it carries counts and
//! timings, never prompts or payloads) and the middleware that counts requests into
//! [`Metrics`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{CONTENT_TYPE, Metrics};

pub(super) async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
}

/// Counts invocations of deployed functions by status and times them. Requests for functions
/// that are not deployed are not counted: their names are whatever a client typed, and
/// counting them would let anyone grow the label set without bound.
pub(super) async fn count_invocations(
    State((state, metrics)): State<(AppState, Arc<Metrics>)>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    req: Request,
    next: Next,
) -> Response {
    // A name that does not parse is the handler's to refuse (as JSON); nothing to count.
    let function = params
        .iter()
        .flat_map(|params| params.iter())
        .find(|(key, _)| *key == "name")
        .map(|(_, value)| value.to_string())
        .filter(|name| state.host.is_loaded(name));
    let started = Instant::now();
    let response = next.run(req).await;
    if let Some(function) = function {
        metrics.record_invocation(&function, response.status().as_u16(), started.elapsed());
    }
    response
}

/// Counts OpenAI-compatible API requests by route and status (a streamed answer counts when
/// its headers go out).
pub(super) async fn count_openai_requests(
    State(metrics): State<Arc<Metrics>>,
    path: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let response = next.run(req).await;
    if let Some(path) = path {
        metrics.record_openai_request(path.as_str(), response.status().as_u16());
    }
    response
}
