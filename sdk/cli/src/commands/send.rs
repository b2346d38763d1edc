//! `fn send`: posts a CloudEvent to a runtime (`/events`) for local testing and prints the
//! reply event.

use anyhow::Context;
use clap::Parser;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use crate::client::{Client, RemoteArgs, error_message};

/// Send a CloudEvent to the runtime (`POST {url}/events`) and print the reply.
///
/// The event goes in binary mode (`ce-*` headers), or with `--structured` as
/// `application/cloudevents+json`. A 200 prints the reply event as JSON (attributes and
/// `data`); a 202 prints that the event was accepted without a reply; any other status prints
/// `error: <status>: <message>` and exits with 1.
#[derive(Debug, Parser)]
pub(crate) struct SendCommand {
    /// The event's `type`.
    #[arg(long = "type", short = 't')]
    ty: String,

    /// The event's `source`.
    #[arg(long, default_value = "/fn-cli")]
    source: String,

    /// The event's `id` (default: a new UUID). Resending an id gets the first reply back: the
    /// runtime dedupes on (source, id).
    #[arg(long)]
    id: Option<String>,

    /// The event's `subject`.
    #[arg(long)]
    subject: Option<String>,

    /// The event data.
    #[arg(long, short = 'd')]
    data: Option<String>,

    /// The data's content type.
    #[arg(long, default_value = "application/json")]
    data_content_type: String,

    /// An extension attribute, `NAME=VALUE` (repeatable).
    #[arg(long = "extension", short = 'e', value_name = "NAME=VALUE", value_parser = parse_extension)]
    extensions: Vec<(String, String)>,

    /// Send in structured mode instead of binary mode.
    #[arg(long)]
    structured: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

fn parse_extension(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    slmfn_runtime::events::check_extension_name(name)?;
    Ok((name.to_string(), value.to_string()))
}

impl SendCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let client = Client::new(&self.remote)?;
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let request = client.events();
        let request = if self.structured {
            let mut event = json!({
                "specversion": "1.0",
                "id": id,
                "source": self.source,
                "type": self.ty,
            });
            let map = event.as_object_mut().expect("an object");
            if let Some(subject) = &self.subject {
                map.insert("subject".into(), subject.clone().into());
            }
            for (k, v) in &self.extensions {
                map.insert(k.clone(), v.clone().into());
            }
            if let Some(data) = &self.data {
                map.insert(
                    "datacontenttype".into(),
                    self.data_content_type.clone().into(),
                );
                let value = match serde_json::from_str::<Value>(data) {
                    Ok(v) if self.data_content_type.contains("json") => v,
                    _ => Value::String(data.clone()),
                };
                map.insert("data".into(), value);
            }
            request
                .header(CONTENT_TYPE, "application/cloudevents+json")
                .body(event.to_string())
        } else {
            let mut headers = HeaderMap::new();
            let mut put = |name: &str, value: &str| -> anyhow::Result<()> {
                headers.insert(
                    HeaderName::try_from(name)?,
                    HeaderValue::from_str(value)
                        .with_context(|| format!("{name}: {value:?} cannot be sent as a header"))?,
                );
                Ok(())
            };
            put("ce-specversion", "1.0")?;
            put("ce-id", &id)?;
            put("ce-source", &self.source)?;
            put("ce-type", &self.ty)?;
            if let Some(subject) = &self.subject {
                put("ce-subject", subject)?;
            }
            for (k, v) in &self.extensions {
                put(&format!("ce-{k}"), v)?;
            }
            if self.data.is_some() {
                put("content-type", &self.data_content_type)?;
            }
            request
                .headers(headers)
                .body(self.data.clone().unwrap_or_default())
        };
        let response = client.send(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.context("reading the reply")?;
        match status.as_u16() {
            202 => {
                println!("accepted: no reply event (id {id})");
                Ok(())
            }
            200 => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply_json(&headers, &body))?
                );
                Ok(())
            }
            _ => anyhow::bail!("{}", error_message(status, &body)),
        }
    }
}

/// The reply as one JSON object: binary mode's `ce-*` headers and data, or the structured body.
fn reply_json(headers: &HeaderMap, body: &[u8]) -> Value {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/cloudevents") {
        return serde_json::from_slice(body)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into());
    }
    let mut event = Map::new();
    for (name, value) in headers {
        if let Some(attr) = name.as_str().strip_prefix("ce-") {
            event.insert(
                attr.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into(),
            );
        }
    }
    if !content_type.is_empty() {
        event.insert("datacontenttype".into(), content_type.into());
    }
    if !body.is_empty() {
        let data = match serde_json::from_slice::<Value>(body) {
            Ok(v) if content_type.contains("json") => v,
            _ => String::from_utf8_lossy(body).into(),
        };
        event.insert("data".into(), data);
    }
    Value::Object(event)
}
