//! CloudEvents: the type delivered to `on_event` and sent with [`emit`] to the runtime's
//! configured sink (`K_SINK`).
//!
//! Errors are [`Error`]; `?` converts them to [`crate::Error::Internal`] in a handler.
//!
//! # Examples
//!
//! ```no_run
//! use slmfn_sdk::events::{self, CloudEvent};
//!
//! # fn main() -> Result<(), slmfn_sdk::Error> {
//! let event = CloudEvent::new("order-42-shipped", "/fn/orders", "com.example.order.shipped")
//!     .with_data("application/json", r#"{"order": 42}"#);
//! events::emit(&event)?;
//! # Ok(())
//! # }
//! ```

use crate::wit::slmfn::agent::{events as wit, types};

pub use types::Cloudevent as CloudEvent;
pub use wit::Error;

impl CloudEvent {
    /// An event (`specversion` 1.0) with these required attributes and nothing else.
    ///
    /// `id` must be unique per `source`; `ty` is the `type` attribute.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            source: source.into(),
            type_: ty.into(),
            specversion: "1.0".to_owned(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: Vec::new(),
            data: None,
        }
    }

    /// Sets `data` and its `datacontenttype`.
    pub fn with_data(mut self, content_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self.data = Some(data.into());
        self
    }

    /// Sets the `subject` attribute.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Adds an extension attribute.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extensions.push((name.into(), value.into()));
        self
    }
}

/// Sends an event to the sink.
pub fn emit(event: &CloudEvent) -> Result<(), Error> {
    wit::emit(event)
}
