//! The runtime as an MCP server at `/mcp` (streamable HTTP, the official `rmcp` server):
//! deployed tool components' tools (`{function}.{tool}`) and agents (`{function}`, input
//! schema from the manifest's `[input]`) are its tools.
//!
//! - **Auth**: a bearer token, the `--mcp-token` or the admin token; without either configured
//!   `/mcp` refuses everything (a Knative pod's queue-proxy forwards from loopback, so the
//!   client's address proves nothing).
//! - **Origin**: validated by rmcp against `--mcp-allowed-origin` (none by default: any
//!   browser `Origin` is 403; clients that send none pass).
//! - **Revisions**: the session-based 2025-06-18 / 2025-11-25 (`Mcp-Session-Id`, sessions in
//!   memory) and the stateless 2026-07-28, which a freshly started, scaled-from-zero pod
//!   answers without any session.

mod handler;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use crate::server::auth::{bearer, tokens_match};
use crate::server::{ApiError, AppState};

/// The `/mcp` routes with their auth.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    let config = StreamableHttpServerConfig::default()
        // Behind Knative the Host is the service's own name: the bearer token, not the Host,
        // is what keeps DNS rebinding out.
        .with_allowed_hosts(Vec::<String>::new())
        .with_allowed_origins(state.config.mcp_allowed_origins.clone())
        .enforce_origin_validation()
        .with_max_request_body_bytes(state.config.max_body_bytes);
    let front = handler::McpFront::new(state.host.clone());
    let service = StreamableHttpService::new(
        move || Ok(front.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        // The transport's own refusals (406 without the right `Accept`, 415, a bad session)
        // answer plain text: JSON like every other error.
        .layer(axum::middleware::map_response(
            crate::server::error::json_rejections,
        ))
}

/// Bearer-token auth of `/mcp`: 401 (with `WWW-Authenticate`) without a valid token.
async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens: Vec<&str> = [
        state.config.mcp_token.as_deref(),
        state.config.token.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    if tokens.is_empty() {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "the MCP server is off: start the runtime with --mcp-token (SLMFN_MCP_TOKEN) or an admin token",
        )
        .into_response();
    }
    let presented = bearer(request.headers());
    match presented {
        Some(token) if tokens.iter().any(|t| tokens_match(token, t)) => next.run(request).await,
        _ => {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token for /mcp",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}
