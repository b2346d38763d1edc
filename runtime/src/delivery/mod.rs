//! Delivery: CloudEvents in at `/` and `/events` to the agents whose `[[triggers]]` match,
//! with replies and dedupe (the event model itself is [`crate::events`]).
//!
//! # Layout
//!
//! - this module: the dispatcher ([`Events`]) and the answer rules below;
//! - `dedupe`: (function, source, id) → outcome, in memory and written behind to sled, and
//!   overlapping duplicates.
//!
//! # Delivery rules
//!
//! An event runs `on-event` of every agent with a matching trigger, concurrently, each at most
//! once per (source, id) within the dedupe window. The answer, in this order of precedence:
//!
//! 1. a retryable failure of any function (429 with `Retry-After`, 5xx): the sender retries,
//!    and the functions that already finished are not run again;
//! 2. a refusal (4xx: the guest's `bad-request` or `not-found`), not retried;
//! 3. the reply event of the *reply function*: the first matching function, in name order,
//!    whose trigger keeps `reply = true` (200, binary mode); the others' replies are dropped
//!    (logged);
//! 4. otherwise 202, also when no trigger matches.

mod dedupe;

use std::sync::Arc;

use axum::http::StatusCode;
use cloudevents::{AttributesReader, Event};
use serde::{Deserialize, Serialize};

pub use dedupe::Window;

use crate::events::{EventMetrics, codec, convert, retryable};
use crate::host::{GuestError, Host, HostError};
use dedupe::{Begin, Seen};

/// What delivering an event to one function (or to all of them) came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The function ran; its reply, if any.
    Done {
        /// The reply event.
        reply: Option<Box<Event>>,
    },
    /// It did not run to a reply.
    Error {
        /// The HTTP status for the sender.
        status: u16,
        /// What went wrong.
        message: String,
        /// `Retry-After` seconds, for 429 and 503.
        retry_after: Option<u32>,
        /// Whether this is the event's final outcome (kept for dedupe): refusals and errors
        /// after the function ran; not overload or a failure that a retry may cure.
        fin: bool,
    },
}

impl Outcome {
    fn is_final(&self) -> bool {
        match self {
            Outcome::Done { .. } => true,
            Outcome::Error { fin, .. } => *fin,
        }
    }

    /// Whether the sender should retry (Knative's data-plane table).
    fn is_retryable(&self) -> bool {
        match self {
            Outcome::Done { .. } => false,
            Outcome::Error { status, .. } => retryable(*status),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Outcome::Done { reply: Some(_) } => StatusCode::OK,
            Outcome::Done { reply: None } => StatusCode::ACCEPTED,
            Outcome::Error { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    fn error(status: StatusCode, message: String, fin: bool) -> Self {
        Outcome::Error {
            status: status.as_u16(),
            message,
            retry_after: None,
            fin,
        }
    }

    /// How a host error answers an event.
    fn from_host(e: HostError) -> Self {
        let message = e.to_string();
        let (status, retry_after, fin) = match &e {
            HostError::Guest(GuestError::BadRequest(_) | GuestError::NotFound(_)) => {
                (StatusCode::BAD_REQUEST, None, true)
            }
            HostError::Guest(GuestError::Overloaded(ms)) => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(ms.div_ceil(1000).max(1)),
                false,
            ),
            HostError::Busy { .. } | HostError::QueueFull { .. } | HostError::MemoryBusy { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, Some(1), false)
            }
            HostError::DeadlineExceeded { .. } => (StatusCode::GATEWAY_TIMEOUT, None, false),
            HostError::FunctionNotFound(_) => (StatusCode::NOT_FOUND, None, false),
            // The guest said it failed: a retry may cure it, so it is not kept.
            _ => (StatusCode::INTERNAL_SERVER_ERROR, None, false),
        };
        Outcome::Error {
            status: status.as_u16(),
            message,
            retry_after,
            fin,
        }
    }
}

/// The dispatcher behind `/` and `/events`.
pub struct Events {
    host: Arc<Host>,
    seen: Seen,
    metrics: EventMetrics,
}

/// What the server answers for one request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 200 with this event (binary mode).
    Reply(Box<Event>),
    /// 200 with these events (batched).
    Replies(Vec<Event>),
    /// 202.
    Accepted,
    /// An error status.
    Error {
        status: StatusCode,
        message: String,
        retry_after: Option<u32>,
    },
}

impl Events {
    /// The dispatcher over `host`'s agents, keeping outcomes in the registry's sled database.
    pub fn new(host: Arc<Host>, window: Window) -> Result<Self, crate::registry::RegistryError> {
        let registry = host.registry();
        // An earlier layout: an outcome per key, and their order.
        for old in ["events.seen", "events.seen.order"] {
            registry.drop_tree(old)?;
        }
        let seen = Seen::open(registry.tree("events.outcomes")?, window)?;
        Ok(Self {
            host,
            seen,
            metrics: EventMetrics::default(),
        })
    }

    /// Returns once every kept outcome is written to the registry's database (flush that
    /// after to have them on disk).
    pub async fn flush(&self) {
        self.seen.flush().await;
    }

    /// The event metrics, for `/metrics`.
    pub fn metrics(&self) -> &EventMetrics {
        &self.metrics
    }

    /// Counts a request by its content mode.
    pub(crate) fn received(&self, mode: &'static str) {
        self.metrics.received(mode);
    }

    /// Delivers one event (binary or structured mode).
    pub(crate) async fn one(&self, event: Event) -> Answer {
        match self.deliver(&event).await {
            Outcome::Done { reply: Some(r) } => Answer::Reply(r),
            other => answer(other),
        }
    }

    /// Delivers a batch, each event as if it came alone; replies come back as a batch.
    pub(crate) async fn batch(&self, events: Vec<Event>) -> Answer {
        let outcomes = futures::future::join_all(events.iter().map(|e| self.deliver(e))).await;
        if let Some(o) = first_error(&outcomes) {
            return answer(o.clone());
        }
        let replies: Vec<Event> = outcomes
            .into_iter()
            .filter_map(|o| match o {
                Outcome::Done { reply } => reply.map(|r| *r),
                Outcome::Error { .. } => None,
            })
            .collect();
        if replies.is_empty() {
            Answer::Accepted
        } else {
            Answer::Replies(replies)
        }
    }

    /// Runs the event on every matching agent (see the module docs for the answer).
    async fn deliver(&self, event: &Event) -> Outcome {
        // Per agent: whether a trigger matches and, if so, whether a matching one replies.
        let targets = self.host.subscribers(|m| {
            m.triggers
                .iter()
                .filter(|t| t.matches(event))
                .fold(None, |replies, t| Some(replies.unwrap_or(false) || t.reply))
        });
        if targets.is_empty() {
            tracing::debug!(event = %codec::describe(event), r#type = event.ty(), "no trigger matches the event");
            return Outcome::Done { reply: None };
        }
        let outcomes = futures::future::join_all(
            targets
                .iter()
                .map(|(function, _)| self.deliver_to(function, event)),
        )
        .await;
        if let Some(o) = first_error(&outcomes) {
            return o.clone();
        }
        let replier = targets.iter().position(|(_, reply)| *reply);
        let mut answer = None;
        for (i, (outcome, (function, _))) in outcomes.into_iter().zip(&targets).enumerate() {
            if let Outcome::Done { reply: Some(r) } = outcome {
                if Some(i) == replier {
                    answer = Some(r);
                } else {
                    tracing::info!(function = %function, event = %codec::describe(event), "dropped the reply of a function that is not the event's reply function");
                }
            }
        }
        Outcome::Done { reply: answer }
    }

    /// One function, once per (source, id).
    async fn deliver_to(&self, function: &str, event: &Event) -> Outcome {
        let running = match self.seen.begin(function, event.source(), event.id()).await {
            Begin::Done(outcome) => {
                tracing::info!(function, event = %codec::describe(event), "duplicate event: answered with the first delivery's outcome");
                self.metrics.delivered(function, "duplicate");
                return outcome;
            }
            Begin::Run(running) => running,
        };
        let outcome = match self.host.on_event(function, convert::to_wit(event)).await {
            Ok(None) => Outcome::Done { reply: None },
            Ok(Some(reply)) => match convert::from_wit(reply) {
                Ok(reply) => Outcome::Done {
                    reply: Some(Box::new(reply)),
                },
                Err(e) => Outcome::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("function {function:?} returned an invalid reply event: {e}"),
                    true,
                ),
            },
            Err(e) => Outcome::from_host(e),
        };
        let label = match &outcome {
            Outcome::Done { reply: Some(_) } => "reply",
            Outcome::Done { reply: None } => "no_reply",
            o if o.is_retryable() => "failed",
            Outcome::Error { .. } => "refused",
        };
        self.metrics.delivered(function, label);
        running.finish(outcome)
    }
}

/// The first retryable error, else the first refusal.
fn first_error(outcomes: &[Outcome]) -> Option<&Outcome> {
    outcomes
        .iter()
        .find(|o| o.is_retryable())
        .or_else(|| outcomes.iter().find(|o| matches!(o, Outcome::Error { .. })))
}

fn answer(outcome: Outcome) -> Answer {
    let status = outcome.status();
    match outcome {
        Outcome::Done { reply: Some(r) } => Answer::Reply(r),
        Outcome::Done { reply: None } => Answer::Accepted,
        Outcome::Error {
            message,
            retry_after,
            ..
        } => Answer::Error {
            status,
            message,
            retry_after,
        },
    }
}
