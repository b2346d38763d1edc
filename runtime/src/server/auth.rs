//! Who may call the protected APIs (admin, OpenAI-compatible): with a token configured,
//! `Authorization: Bearer <token>` (401 missing, 403 wrong); without one, loopback clients only
//! (403 otherwise), so a runtime started without a token is never open to the network. In
//! cluster mode (`--cluster`, or `K_SERVICE` set by Knative) a proxy forwards every request
//! from 127.0.0.1, so there loopback proves nothing: without a token these APIs are off.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ApiError;
use crate::config::RuntimeConfig;

/// The admin API's guard.
pub(super) async fn admin(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&state.config, req.headers(), peer, "admin API")?;
    Ok(next.run(req).await)
}

/// The OpenAI-compatible API's guard: the admin rule, errors in OpenAI's shape. OpenAI clients
/// send their API key as the bearer token, so `api_key=<SLMFN_TOKEN>` is what they configure.
pub(super) async fn openai(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&state.config, req.headers(), peer, "OpenAI-compatible API")
        .map_err(|e| e.openai(Some("invalid_api_key"), None))?;
    Ok(next.run(req).await)
}

fn check(
    config: &RuntimeConfig,
    headers: &HeaderMap,
    peer: SocketAddr,
    api: &str,
) -> Result<(), ApiError> {
    match &config.token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "the {api} needs `Authorization: Bearer <token>` (set SLMFN_TOKEN for the CLI)"
                    ),
                )),
                Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("the {api} token is wrong"),
                )),
                Some(_) => Ok(()),
            }
        }
        None if config.cluster_mode() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the {api} is off in cluster mode without a token (requests arrive through a proxy on 127.0.0.1); start the runtime with SLMFN_TOKEN"
            ),
        )),
        None if !peer.ip().is_loopback() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the {api} without a token answers loopback clients only; start the runtime with SLMFN_TOKEN"
            ),
        )),
        None => Ok(()),
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
