//! The runtime's HTTP API (docs/api.md) as the commands use it.
//!
//! Error policy: every non-2xx answer becomes `"<status>: <message>"`, where the message is the
//! `error` field of the runtime's JSON error body, or the body text when the body is not one (a
//! function may answer anything). A refused connection says how to start a runtime. The admin
//! token is sent to `/admin/...` only, never to `/fn/...`: invocation headers reach the guest.

use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long to wait for the TCP connection. Invocations themselves have no client-side timeout:
/// the runtime enforces each function's deadline (up to 290 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest body excerpt quoted in an error when the body is not a JSON error.
const MAX_ERROR_BODY_CHARS: usize = 500;

/// Where the runtime is and how to authenticate to its admin API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RemoteArgs {
    /// Base URL of the slmfn runtime.
    #[arg(long, env = "SLMFN_URL", default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,

    /// Bearer token for the admin API (the runtime's `--token`).
    #[arg(long, env = "SLMFN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// A client for one runtime.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The base URL without a trailing `/`; paths are appended to it as text so that a runtime
    /// behind a path prefix (`http://host/slmfn`) works.
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let url = Url::parse(&args.url).with_context(|| format!("invalid --url {:?}", args.url))?;
        match url.scheme() {
            "http" => {}
            // reqwest is built without a TLS stack in this workspace (no rustls feature).
            "https" => anyhow::bail!(
                "invalid --url {:?}: https is not supported by this build of `fn`; reach the runtime over http (for example through `kubectl port-forward`)",
                args.url
            ),
            other => anyhow::bail!("invalid --url {:?}: scheme {other:?} is not http", args.url),
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("slmfn-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            base: args.url.trim_end_matches('/').to_string(),
            token: args.token.clone().filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The full URL of `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL a function is invoked at.
    pub(crate) fn invoke_url(&self, name: &str) -> String {
        self.url(&format!("/fn/{name}"))
    }

    /// A request to the admin API (`/admin{path}`), with the bearer token when there is one.
    pub(crate) fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, self.url(&format!("/admin{path}")));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A request to a function (`/fn/{name}{path}`). Never carries the admin token.
    pub(crate) fn invoke(&self, method: Method, name: &str, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.invoke_url(name)))
    }

    /// A CloudEvent delivery (`POST /events`). Never carries the admin token.
    pub(crate) fn events(&self) -> RequestBuilder {
        self.http.post(self.url("/events"))
    }

    /// Sends a request; transport failures become errors naming the runtime. Any status is `Ok`.
    pub(crate) async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// Sends an admin request and decodes its 2xx JSON answer; non-2xx answers become errors.
    pub(crate) async fn admin_json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = self.send(request).await?;
        let status = response.status();
        let url = response.url().to_string();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            let mut message = error_message(status, &body);
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
                && !message.contains("SLMFN_TOKEN")
            {
                message.push_str(" (pass --token or set SLMFN_TOKEN to the runtime's token)");
            }
            return Err(anyhow!(message));
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "unexpected answer from {url}: {}",
                excerpt(&String::from_utf8_lossy(&body))
            )
        })
    }

    fn transport_error(&self, error: reqwest::Error) -> anyhow::Error {
        if error.is_connect() {
            if is_connection_refused(&error) {
                anyhow!(
                    "cannot reach the slmfn runtime at {}: is it running? (start it with `fn serve`)",
                    self.base
                )
            } else {
                anyhow!(
                    "cannot reach the slmfn runtime at {}: {:#}",
                    self.base,
                    anyhow!(error)
                )
            }
        } else {
            anyhow!(error).context(format!(
                "request to the slmfn runtime at {} failed",
                self.base
            ))
        }
    }
}

/// A revision as the admin API describes it (fields the CLI shows; `--json` prints the
/// answer as received).
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Revision {
    pub(crate) function: String,
    pub(crate) revision: String,
    #[serde(default)]
    pub(crate) created_at: String,
    #[serde(default)]
    pub(crate) component_sha256: String,
    #[serde(default)]
    pub(crate) component_size: u64,
}

/// A function as the admin API describes it.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Function {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) current_revision: String,
    #[serde(default)]
    pub(crate) revisions: u64,
    #[serde(default)]
    pub(crate) updated_at: String,
}

/// Decodes an admin answer kept as JSON into the type the CLI shows.
pub(crate) fn decode<T: DeserializeOwned>(value: &Value) -> anyhow::Result<T> {
    T::deserialize(value).with_context(|| format!("unexpected answer from the runtime: {value}"))
}

fn is_connection_refused(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// `"<status>: <message>"` for a non-2xx answer: the `error` field of a JSON error body, else
/// the body text (shortened), else the status alone.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    let message = from_json.unwrap_or_else(|| excerpt(String::from_utf8_lossy(body).trim()));
    if message.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {message}")
    }
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_prefer_the_json_error_field() {
        let body = br#"{"error": "unknown function \"x\""}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, body),
            r#"404 Not Found: unknown function "x""#
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b"upstream down\n"),
            "502 Bad Gateway: upstream down"
        );
        assert_eq!(error_message(StatusCode::FORBIDDEN, b""), "403 Forbidden");
        let long = "x".repeat(2000);
        assert!(error_message(StatusCode::BAD_REQUEST, long.as_bytes()).len() < 600);
    }

    #[test]
    fn urls_are_joined_as_text_and_https_is_refused() {
        let args = RemoteArgs {
            url: "http://h:1/prefix/".into(),
            token: Some("t".into()),
        };
        let client = Client::new(&args).unwrap();
        assert_eq!(client.invoke_url("hello"), "http://h:1/prefix/fn/hello");
        let request = client
            .invoke(Method::POST, "hello", "/a?b=c")
            .build()
            .unwrap();
        assert_eq!(request.url().as_str(), "http://h:1/prefix/fn/hello/a?b=c");
        assert!(request.headers().get("authorization").is_none());
        let request = client.admin(Method::GET, "/functions").build().unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer t");

        let args = RemoteArgs {
            url: "https://h".into(),
            token: None,
        };
        assert!(
            Client::new(&args)
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        let args = RemoteArgs {
            url: "not a url".into(),
            token: None,
        };
        assert!(Client::new(&args).is_err());
    }
}
