//! `events.emit`: a guest's event POSTed to `K_SINK` in binary mode, with `K_CE_OVERRIDES`
//! applied (a SinkBinding's `{"extensions": {...}}`), retried with backoff on what Knative's
//! data plane calls retryable (connection errors, 404, 408, 409, 429, 5xx) within the
//! invocation's deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cloudevents::Event;

use crate::wit::slmfn::agent::types::Cloudevent;

/// Attempts per emit (the first and up to three retries).
const ATTEMPTS: u32 = 4;
/// The first retry's delay; each next one doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// One attempt's limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the sink settings are unusable (checked at startup).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `K_SINK` is not an http(s) URL.
    #[error("K_SINK {0:?} is not an http:// or https:// URL")]
    Url(String),
    /// `K_CE_OVERRIDES` is not `{"extensions": {name: string}}`.
    #[error("K_CE_OVERRIDES is not {{\"extensions\": {{\"name\": \"value\"}}}}: {0}")]
    Overrides(String),
    /// The HTTP client could not be built.
    #[error("cannot build the sink's HTTP client: {0}")]
    Client(String),
}

/// Why one emit failed (mapped to the WIT `events.error`).
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The event is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The sink refused it or stayed unreachable.
    #[error("{0}")]
    Delivery(String),
}

/// Where emitted events go.
#[derive(Debug)]
pub struct Sink {
    url: String,
    overrides: BTreeMap<String, String>,
    client: reqwest::Client,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    #[serde(default)]
    extensions: BTreeMap<String, String>,
}

impl Sink {
    /// The sink at `url` with the SinkBinding's `K_CE_OVERRIDES` JSON, if any.
    pub fn new(url: &str, overrides: Option<&str>) -> Result<Self, SinkError> {
        let parsed = url::Url::parse(url).map_err(|_| SinkError::Url(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SinkError::Url(url.to_string()));
        }
        let overrides = match overrides.map(str::trim).filter(|s| !s.is_empty()) {
            None => BTreeMap::new(),
            Some(text) => {
                serde_json::from_str::<Overrides>(text)
                    .map_err(|e| SinkError::Overrides(e.to_string()))?
                    .extensions
            }
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(Self {
            url: url.to_string(),
            overrides,
            client,
        })
    }

    /// The sink's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `event`, retrying until it is accepted, refused for good, or `deadline` is near.
    pub async fn emit(&self, mut event: Cloudevent, deadline: Instant) -> Result<(), EmitError> {
        for (name, value) in &self.overrides {
            event.extensions.retain(|(n, _)| n != name);
            event.extensions.push((name.clone(), value.clone()));
        }
        let event: Event = super::convert::from_wit(event).map_err(EmitError::Invalid)?;
        let (headers, body) = super::codec::to_binary(event).map_err(EmitError::Invalid)?;
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let sent = self
                .client
                .post(&self.url)
                .headers(headers.clone())
                .body(body.clone())
                .timeout(left.min(ATTEMPT_TIMEOUT))
                .send()
                .await;
            let retryable = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    last = format!("the sink {} answered {}", self.url, r.status());
                    super::retryable(r.status().as_u16())
                }
                Err(e) => {
                    last = format!("cannot reach the sink {}: {e}", self.url);
                    true
                }
            };
            if !retryable {
                return Err(EmitError::Delivery(last));
            }
            tracing::debug!(attempt, error = %last, "emit failed; retrying");
            if attempt < ATTEMPTS {
                let wait = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
                backoff *= 2;
            }
        }
        Err(EmitError::Delivery(if last.is_empty() {
            format!(
                "the invocation's deadline passed before the event could be sent to {}",
                self.url
            )
        } else {
            format!("{last} (gave up within the invocation's deadline)")
        }))
    }
}
