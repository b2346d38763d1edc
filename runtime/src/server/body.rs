//! Reading a request body with the two bounds every route needs: a size limit (413, checked
//! against `Content-Length` before anything is read) and a time limit (408, so a client that
//! trickles its body cannot hold a handler and what it reserved). A client that goes away
//! mid-body is neither: it is 400, and nothing it sent is used.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::error::ApiError;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// Larger than the route's limit.
    #[error("the request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// Not received within the body timeout.
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The connection failed or closed before the body was complete.
    #[error("the request body was not received completely: {0}")]
    Incomplete(String),
}

impl BodyError {
    /// The status that says it.
    pub(super) fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Incomplete(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

/// The whole body, at most `limit` bytes, within `timeout`.
pub(super) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let collect = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Ok(Err(e)) => Err(BodyError::Incomplete(e.to_string())),
    }
}
