//! `fn invoke NAME`: calls a deployed function over HTTP and prints its answer.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use clap::Parser;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::client::{Client, RemoteArgs, error_message};
use crate::commands::parse_name;
use crate::output;

/// Invoke a deployed function (`POST {url}/fn/NAME{path}`) and print the response body.
///
/// A JSON body is pretty-printed. A non-2xx answer prints `error: <status>: <message>` and
/// exits with 1.
#[derive(Debug, Parser)]
pub(crate) struct InvokeCommand {
    /// The function's name.
    #[arg(value_parser = parse_name)]
    name: String,

    /// Request body, sent as `content-type: application/json`.
    #[arg(long, short = 'd', conflicts_with = "file")]
    data: Option<String>,

    /// Read the request body from a file (`-` for stdin).
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,

    /// Path after `/fn/NAME`, optionally with a query: `/greet?name=Ada`.
    #[arg(long)]
    path: Option<String>,

    /// HTTP method.
    #[arg(long, short = 'X', default_value = "POST", value_parser = parse_method)]
    method: Method,

    /// A request header, `NAME: VALUE` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,

    /// Print `{"status", "headers", "body"}` as JSON (also for non-2xx answers).
    #[arg(long, conflicts_with = "raw")]
    json: bool,

    /// Print the body byte for byte (no JSON pretty-printing).
    #[arg(long)]
    raw: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

impl InvokeCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let (body, content_type) = self.body().await?;

        let mut headers = HeaderMap::new();
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        }
        // The first user value of a name replaces a default; later ones add to it.
        let mut seen = Vec::new();
        for (name, value) in self.headers {
            if seen.contains(&name) {
                headers.append(name, value);
            } else {
                headers.insert(name.clone(), value);
                seen.push(name);
            }
        }
        let request = client
            .invoke(
                self.method,
                &self.name,
                &normalize_path(self.path.as_deref().unwrap_or_default()),
            )
            .headers(headers)
            .body(body);
        let response = client.send(request).await?;
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .context("cannot read the function's answer")?;

        if self.json {
            output::print_json(&envelope(status.as_u16(), &response_headers, &bytes))?;
        } else if status.is_success() {
            print_body(&bytes, self.raw)?;
        }
        if status.is_success() {
            return Ok(());
        }
        let mut message = error_message(status, &bytes);
        if let Some(retry) = response_headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
        {
            message.push_str(&format!(" (retry after {retry} s)"));
        }
        Err(anyhow!(message))
    }

    /// The request body and its default content type.
    async fn body(&self) -> anyhow::Result<(Vec<u8>, Option<&'static str>)> {
        if let Some(data) = &self.data {
            return Ok((data.clone().into_bytes(), Some("application/json")));
        }
        let Some(file) = &self.file else {
            return Ok((Vec::new(), None));
        };
        if file.as_os_str() == "-" {
            let mut body = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut body)
                .await
                .context("cannot read stdin")?;
            return Ok((body, None));
        }
        let body = tokio::fs::read(file)
            .await
            .with_context(|| format!("cannot read {}", file.display()))?;
        let json = file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Ok((body, json.then_some("application/json")))
    }
}

/// `/a`, `?q=1` and `` stay; `a/b` becomes `/a/b`.
fn normalize_path(path: &str) -> String {
    if path.is_empty() || path.starts_with('/') || path.starts_with('?') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn parse_method(method: &str) -> Result<Method, String> {
    Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid HTTP method {method:?}"))
}

fn parse_header(header: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = header
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:VALUE, got {header:?}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("invalid header name {:?}", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name, value))
}

/// Pretty JSON when the body is JSON (and not `--raw`), else the bytes as they are.
fn print_body(body: &[u8], raw: bool) -> anyhow::Result<()> {
    if !raw && let Ok(value) = serde_json::from_slice::<Value>(body) {
        return output::print_json(&value);
    }
    output::write_stdout(body)?;
    // Keep the shell prompt on its own line; never alter what a pipe receives.
    if !raw && !body.is_empty() && !body.ends_with(b"\n") && std::io::stdout().is_terminal() {
        output::write_stdout(b"\n")?;
    }
    Ok(())
}

/// The `--json` form of an answer. The body is JSON when it parses as JSON, else text (bytes
/// that are not UTF-8 are replaced with U+FFFD). Repeated headers are joined with `, `.
fn envelope(status: u16, headers: &HeaderMap, body: &[u8]) -> Value {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let body = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    json!({"status": status, "headers": map, "body": body})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_paths() {
        let (name, value) = parse_header("X-Trace-Id: abc:def ").unwrap();
        assert_eq!(name.as_str(), "x-trace-id");
        assert_eq!(value, "abc:def");
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert_eq!(parse_method("get").unwrap(), Method::GET);
        assert_eq!(normalize_path("a/b?x=1"), "/a/b?x=1");
        assert_eq!(normalize_path("?x=1"), "?x=1");
        assert_eq!(normalize_path(""), "");
    }

    #[test]
    fn envelope_keeps_json_bodies_as_json() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let v = envelope(200, &headers, br#"{"count": 3}"#);
        assert_eq!(
            v,
            json!({"status": 200, "headers": {"x-a": "1, 2"}, "body": {"count": 3}})
        );
        assert_eq!(envelope(500, &HeaderMap::new(), b"boom")["body"], "boom");
    }
}
