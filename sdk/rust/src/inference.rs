//! Text generation and embeddings on the runtime's warm, shared model pool.
//!
//! Every [`Params`] field is optional: [`Params::default()`] leaves all of them to the
//! function manifest's `[models]` defaults and the model's own. Errors are [`Error`]; `?`
//! converts them to [`crate::Error::Internal`] in a handler.
//!
//! # Examples
//!
//! ```no_run
//! use slmfn_sdk::inference::{self, Message, Params, ResponseFormat};
//!
//! # fn main() -> Result<(), slmfn_sdk::Error> {
//! // Default parameters.
//! let answer = inference::chat(&[
//!     Message::system("Answer in one word."),
//!     Message::user("What colour is the sky?"),
//! ])?;
//! println!("{} ({} tokens)", answer.text, answer.usage.completion_tokens);
//!
//! // Greedy, short, and valid JSON.
//! let params = Params {
//!     max_tokens: Some(64),
//!     temperature: Some(0.0),
//!     response_format: Some(ResponseFormat::Json),
//!     ..Params::default()
//! };
//! let json = inference::chat_with(&[Message::user("A JSON object with a colour")], &params)?;
//!
//! // Streaming.
//! let stream = inference::chat_stream(&[Message::user("Count to five")], &Params::default())?;
//! while let Some(chunk) = stream.next()? {
//!     print!("{chunk}");
//! }
//! let finished = stream.finish()?;
//! # let _ = (json, finished);
//! # Ok(())
//! # }
//! ```

use crate::wit::slmfn::agent::inference as wit;

pub use wit::{Completion, CompletionStream, Error, Message, Params, ResponseFormat, Usage};

/// A `Result` whose error is the inference [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// All fields `None` or empty: the manifest's and the model's defaults apply.
impl Default for Params {
    fn default() -> Self {
        Self {
            model: None,
            max_tokens: None,
            temperature: None,
            top_p: None,
            top_k: None,
            repeat_penalty: None,
            seed: None,
            stop: Vec::new(),
            response_format: None,
        }
    }
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `tool` message (a tool's result shown to the model).
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
}

/// Chat completion with default [`Params`].
pub fn chat(messages: &[Message]) -> Result<Completion> {
    chat_with(messages, &Params::default())
}

/// Chat completion with the model's chat template.
pub fn chat_with(messages: &[Message], params: &Params) -> Result<Completion> {
    wit::chat(messages, params)
}

/// Raw text completion of a prompt (no chat template).
pub fn generate(prompt: &str, params: &Params) -> Result<Completion> {
    wit::generate(prompt, params)
}

/// Streaming chat completion: call [`CompletionStream::next`] until it returns `None`, then
/// [`CompletionStream::finish`] for the usage.
pub fn chat_stream(messages: &[Message], params: &Params) -> Result<CompletionStream> {
    wit::chat_stream(messages, params)
}

/// Embeds each text with an embedding model (`model`, else the manifest's
/// `[models] default_embedding`, else the only embedding model in `allowed`); one L2-normalized
/// vector per text, in order. A text longer than the model's window (512 tokens for
/// all-MiniLM-L6-v2) is an [`Error::InvalidInput`], never silently truncated.
pub fn embed(texts: &[String], model: Option<&str>) -> Result<Vec<Vec<f32>>> {
    wit::embed(texts, model)
}
