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
            let given = bearer(headers);
            match given {
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "the {api} needs `Authorization: Bearer <token>` (set SLMFN_TOKEN for the CLI)"
                    ),
                )),
                Some(g) if !tokens_match(g, token) => Err(ApiError::new(
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

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, as RFC
/// 9110 has it).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Whether a presented token is `token`, in time that depends on neither (their digests are
/// compared in constant time, so not even the length leaks).
pub(super) fn tokens_match(presented: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let (a, b) = (Sha256::digest(presented), Sha256::digest(token));
    a.as_slice().ct_eq(b.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), token, "{value}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn tokens_match_only_themselves() {
        assert!(tokens_match("secret", "secret"));
        for wrong in ["", "secre", "secret ", "Secret", "secretsecret"] {
            assert!(!tokens_match(wrong, "secret"), "{wrong:?}");
        }
    }
}
