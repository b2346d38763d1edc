//! `slmfn:agent/events`: emission to `K_SINK`. Without a sink, `no-sink`; event delivery itself
//! is not wired in yet and answers `unavailable`.

use crate::host::bindings::slmfn::agent::events::{self, Error};
use crate::host::bindings::slmfn::agent::types::Cloudevent;
use crate::host::state::HostState;

impl events::Host for HostState {
    async fn emit(&mut self, _event: Cloudevent) -> Result<(), Error> {
        match &self.sink {
            None => Err(Error::NoSink),
            Some(sink) => Err(Error::Unavailable(format!(
                "event delivery to {sink} is not available in this runtime yet"
            ))),
        }
    }
}
