//! Built-in host tools: `clock` (the time) and `http` (a GET limited to the operator's
//! allow-list of hosts, with size and time caps).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::tools::{CallContext, ToolDef, ToolError, ToolOutput, ToolProvider};

/// `clock.now`: the current time.
pub struct Clock {
    defs: Arc<[ToolDef]>,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            defs: Arc::new([ToolDef {
                name: "now".into(),
                description:
                    "The current date and time (UTC, RFC 3339) and Unix time in milliseconds."
                        .into(),
                input_schema: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            }]),
        }
    }
}

impl ToolProvider for Clock {
    fn namespace(&self) -> &str {
        "clock"
    }

    fn list(&self) -> BoxFuture<'_, Result<Arc<[ToolDef]>, ToolError>> {
        futures::future::ready(Ok(self.defs.clone())).boxed()
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        _arguments: Value,
        _context: &'a CallContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        let result = match tool {
            "now" => {
                let now = SystemTime::now();
                let unix_ms = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                Ok(ToolOutput::structured(json!({
                    "utc": humantime::format_rfc3339_seconds(now).to_string(),
                    "unix_ms": unix_ms,
                })))
            }
            other => Err(ToolError::NotFound(format!("clock has no tool {other:?}"))),
        };
        futures::future::ready(result).boxed()
    }
}

/// The limits of `http.fetch`.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Hosts that may be fetched: `host` (any port) or `host:port`.
    pub allow: Vec<String>,
    /// Largest body read; the rest is cut (the answer says `truncated`).
    pub max_bytes: usize,
    /// Time for the whole fetch.
    pub timeout: Duration,
}

/// `http.fetch`: GET a URL on an allowed host.
pub struct Http {
    limits: Arc<HttpLimits>,
    client: reqwest::Client,
    defs: Arc<[ToolDef]>,
}

impl Http {
    /// A fetcher limited to `limits`.
    pub fn new(limits: HttpLimits) -> Result<Self, ToolError> {
        let limits = Arc::new(limits);
        let policy_limits = limits.clone();
        // Redirects are followed only to allowed hosts, at most 5.
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if allowed(&policy_limits.allow, attempt.url()) {
                attempt.follow()
            } else {
                let url = attempt.url().to_string();
                attempt.error(format!(
                    "redirect to {url}: its host is not in the allow-list"
                ))
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .timeout(limits.timeout)
            .user_agent(concat!("slmfn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ToolError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        let hosts = limits.allow.join(", ");
        Ok(Self {
            defs: Arc::new([ToolDef {
                name: "fetch".into(),
                description: format!(
                    "Fetches a URL with GET and returns its status and body (text). Allowed hosts: {hosts}."
                ),
                input_schema: json!({
                    "type": "object",
                    "properties": {
                        "url": {"type": "string", "description": "http:// or https:// URL on an allowed host"},
                    },
                    "required": ["url"],
                    "additionalProperties": false,
                }),
            }]),
            limits,
            client,
        })
    }

    async fn fetch(&self, url: &str) -> Result<ToolOutput, ToolError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ToolError::InvalidArguments(format!("url {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ToolError::InvalidArguments(format!(
                "url {url:?}: only http and https are fetched"
            )));
        }
        if !allowed(&self.limits.allow, &parsed) {
            return Ok(ToolOutput::error(format!(
                "{url}: the host is not in the operator's allow-list ({})",
                self.limits.allow.join(", ")
            )));
        }
        let mut response = match self.client.get(parsed).send().await {
            Ok(r) => r,
            Err(e) => return Ok(ToolOutput::error(format!("fetching {url} failed: {e}"))),
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = Vec::new();
        let mut truncated = false;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.limits.max_bytes - body.len();
                    if chunk.len() > room {
                        body.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Ok(ToolOutput::error(format!("reading {url} failed: {e}"))),
            }
        }
        let mut out = ToolOutput::structured(json!({
            "status": status,
            "content_type": content_type,
            "body": String::from_utf8_lossy(&body),
            "truncated": truncated,
        }));
        out.is_error = status >= 400;
        Ok(out)
    }
}

/// Whether `url`'s host (and port) is in `allow`.
fn allowed(allow: &[String], url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    allow.iter().any(|entry| match entry.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => {
            h.eq_ignore_ascii_case(host) && port == p.parse().ok()
        }
        _ => entry.eq_ignore_ascii_case(host),
    })
}

impl ToolProvider for Http {
    fn namespace(&self) -> &str {
        "http"
    }

    fn list(&self) -> BoxFuture<'_, Result<Arc<[ToolDef]>, ToolError>> {
        futures::future::ready(Ok(self.defs.clone())).boxed()
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
        _context: &'a CallContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        async move {
            match tool {
                "fetch" => {
                    let url = arguments["url"].as_str().unwrap_or_default();
                    self.fetch(url).await
                }
                other => Err(ToolError::NotFound(format!("http has no tool {other:?}"))),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_host_and_port() {
        let allow = vec!["api.example.com".to_string(), "127.0.0.1:8123".to_string()];
        let ok = |u: &str| allowed(&allow, &reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com:8080/x"));
        assert!(ok("http://127.0.0.1:8123/"));
        assert!(!ok("http://127.0.0.1:8124/"));
        assert!(!ok("https://example.com/"));
        assert!(!ok("https://api.example.com.evil.org/"));
    }
}
