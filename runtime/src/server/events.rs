//! `POST /` and `POST /events`: CloudEvents in (binary, structured or batched mode), the reply
//! out in binary mode. Statuses follow Knative's data-plane contract (see docs/api.md): 200
//! with the reply event, 202 accepted without one (also when no trigger matches), 400 for a
//! malformed event, 413 over the size limit, 415 for a non-JSON event format, 429/5xx when a
//! retry may help, 503 while not ready (or draining). Other methods: 405.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::delivery::Answer;
use crate::events::codec::{self, Incoming};

pub(super) async fn receive(State(state): State<AppState>, req: Request) -> Response {
    // Before the functions are loaded no trigger would match, and a 202 would lose the event:
    // not ready (and draining) is 503, which the sender retries.
    if let Some(reason) = state.readiness.reason() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready for events: {reason}"),
        )
        .retry_after(1)
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let limit = state.config.max_event_bytes;
    let timeout = state.config.body_timeout();
    let body = match super::body::read(&parts.headers, body, limit, timeout).await {
        Ok(body) => body,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let parsed = codec::parse(&parts.headers, body);
    let incoming = match parsed {
        Ok(incoming) => incoming,
        Err(e) => return ApiError::new(e.status(), e.to_string()).into_response(),
    };
    state.events.received(incoming.mode());
    let answer = match incoming {
        Incoming::One(event, _) => state.events.one(*event).await,
        Incoming::Batch(events) => state.events.batch(events).await,
    };
    let written = match answer {
        Answer::Accepted => return StatusCode::ACCEPTED.into_response(),
        Answer::Error {
            status,
            message,
            retry_after,
        } => {
            let error = ApiError::new(status, message);
            return match retry_after {
                Some(s) => error.retry_after(s),
                None => error,
            }
            .into_response();
        }
        Answer::Reply(event) => codec::binary_response(*event),
        Answer::Replies(events) => codec::batch_response(&events),
    };
    written.unwrap_or_else(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the reply event cannot be sent: {e}"),
        )
        .into_response()
    })
}

pub(super) async fn method_not_allowed() -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "CloudEvents are delivered with POST",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}
