//! `slmfn:agent/inference`: linked so agents built against the full contract load, answering
//! `unavailable` until the warm model pool is wired in (an honest error, never a fake result).

use wasmtime::component::Resource;

use crate::host::bindings::slmfn::agent::inference::{
    self, Completion, Error, HostCompletionStream, Message, Params,
};
use crate::host::state::HostState;

/// A streaming generation. Uninhabited until the model pool exists: `chat-stream` never creates one.
#[allow(unreachable_pub)] // bindgen re-exports it from the generated module
pub enum CompletionStream {}

fn unavailable() -> Error {
    Error::Unavailable("inference is not available in this runtime: no model pool is configured".into())
}

impl inference::Host for HostState {
    async fn chat(&mut self, _messages: Vec<Message>, _params: Params) -> Result<Completion, Error> {
        Err(unavailable())
    }

    async fn generate(&mut self, _prompt: String, _params: Params) -> Result<Completion, Error> {
        Err(unavailable())
    }

    async fn chat_stream(
        &mut self,
        _messages: Vec<Message>,
        _params: Params,
    ) -> Result<Resource<CompletionStream>, Error> {
        Err(unavailable())
    }

    async fn embed(&mut self, _texts: Vec<String>, _model: Option<String>) -> Result<Vec<Vec<f32>>, Error> {
        Err(unavailable())
    }
}

impl HostCompletionStream for HostState {
    async fn next(&mut self, _stream: Resource<CompletionStream>) -> Result<Option<String>, Error> {
        Err(unavailable())
    }

    async fn finish(&mut self, _stream: Resource<CompletionStream>) -> Result<Completion, Error> {
        Err(unavailable())
    }

    async fn drop(&mut self, stream: Resource<CompletionStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
