//! CloudEvents: the event model at the runtime's edges — HTTP ↔ events, the JSON format, the
//! `[[triggers]]` filters, conversion to and from the WIT `cloudevent`, and the sink for
//! `events.emit`. Delivering an event to the agents is [`crate::delivery`].
//!
//! # Layout
//!
//! - [`trigger`]: `[[triggers]]` in `fn.toml` and Knative's filter dialects.
//! - `codec`: HTTP ↔ events (binary, structured and batched modes; bounded bodies).
//! - `json_format`: the JSON event format read in one pass (structured and batched modes).
//! - `convert`: the SDK's event ↔ the WIT `cloudevent`.
//! - [`sink`]: `events.emit` to `K_SINK` with retries and `K_CE_OVERRIDES`.
//! - `metrics`: events received and deliveries, for `/metrics`.

pub(crate) mod codec;
pub(crate) mod convert;
mod json_format;
mod metrics;
pub mod sink;
pub mod trigger;

pub use codec::MIN_EVENT_LIMIT;
pub use convert::check_extension_name;
pub use metrics::EventMetrics;

/// Whether a sender retries a delivery answered with `status` (Knative's data-plane table:
/// 404, 408, 409, 429 and 5xx); used for our answers and for the sink's.
pub(crate) fn retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || status >= 500
}
