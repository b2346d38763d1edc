//! `slmfn:agent/events`: `emit` to the runtime's sink (`K_SINK`); without one, `no-sink`.

use std::sync::Arc;
use std::time::Instant;

use crate::events::sink::{EmitError, Sink};
use crate::wit::slmfn::agent::events::{self, Error};
use crate::wit::slmfn::agent::types::Cloudevent;

/// The events capability of one invocation.
pub(crate) struct EventsCtx {
    /// The sink, if the runtime has one.
    pub(crate) sink: Option<Arc<Sink>>,
    /// The invocation's deadline: retries stop before it.
    pub(crate) deadline: Instant,
}

impl events::Host for EventsCtx {
    async fn emit(&mut self, event: Cloudevent) -> Result<(), Error> {
        let Some(sink) = self.sink.clone() else {
            return Err(Error::NoSink);
        };
        sink.emit(event, self.deadline).await.map_err(|e| match e {
            EmitError::Invalid(m) => Error::Invalid(m),
            EmitError::Delivery(m) => Error::Delivery(m),
        })
    }
}
