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

pub use wit::{
    Completion, CompletionStream, Error, Message, Params, ResponseFormat, ToolCall, ToolChoice,
    ToolCompletion, Turn, Usage,
};

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

impl Turn {
    /// A turn with any role and no tool calls.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A `system` turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` turn that answered in text.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// The `assistant` turn that made `calls` (what [`chat_with_tools`] returned).
    pub fn calls(calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new("assistant", "")
        }
    }

    /// The `tool` turn that answers the call `call_id` with `content` (the tool's result).
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new("tool", content)
        }
    }
}

impl From<Message> for Turn {
    fn from(m: Message) -> Self {
        Self::new(m.role, m.content)
    }
}

/// A chat that answers text or calls one of `tools` (e.g. [`crate::tools::list`]'s): a call
/// names one of them and its arguments are valid against its input schema, by construction.
/// `finish_reason` is `tool-calls` when [`ToolCompletion::tool_calls`] is not empty.
/// `params.response_format` must be `None`.
///
/// ```no_run
/// use slmfn_sdk::inference::{self, Params, ToolChoice, Turn};
/// use slmfn_sdk::tools;
///
/// # fn main() -> Result<(), slmfn_sdk::Error> {
/// let available = tools::list()?;
/// let mut turns = vec![Turn::user("What is ACME trading at?")];
/// let answer = inference::chat_with_tools(&turns, &available, &ToolChoice::Auto, &Params::default())?;
/// for call in &answer.tool_calls {
///     let result = tools::call(&call.name, &call.arguments)?;
///     let text = result.content.iter().map(|c| format!("{c:?}")).collect::<String>();
///     turns.push(Turn::calls(vec![call.clone()]));
///     turns.push(Turn::tool_result(call.id.clone(), text));
/// }
/// # Ok(())
/// # }
/// ```
pub fn chat_with_tools(
    turns: &[Turn],
    tools: &[crate::tools::Tool],
    choice: &ToolChoice,
    params: &Params,
) -> Result<ToolCompletion> {
    wit::chat_with_tools(turns, tools, choice, params)
}

/// A chat whose answer is JSON valid against `T`'s schema (from `schemars`), parsed as `T`.
/// An answer cut by `max_tokens` (incomplete JSON) is an [`Error::InvalidInput`] saying so.
/// Derive `T` with `#[serde(deny_unknown_fields)]`: its schema then forbids properties it does
/// not declare, which a small model would otherwise add.
///
/// ```no_run
/// use slmfn_sdk::inference::{self, Message, Params};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Triage { category: String, urgent: bool }
///
/// # fn main() -> Result<(), slmfn_sdk::Error> {
/// let t: Triage = inference::chat_json(&[Message::user("My card was charged twice!")], &Params::default())?;
/// # let _ = (t.category, t.urgent);
/// # Ok(())
/// # }
/// ```
pub fn chat_json<T: serde::de::DeserializeOwned + schemars::JsonSchema>(
    messages: &[Message],
    params: &Params,
) -> Result<T> {
    let schema = schemars::schema_for!(T);
    let params = Params {
        response_format: Some(ResponseFormat::JsonSchema(
            serde_json::to_string(&schema).expect("a schema serializes"),
        )),
        ..params.clone()
    };
    let done = chat_with(messages, &params)?;
    if done.finish_reason != "stop" {
        return Err(Error::InvalidInput(format!(
            "the answer was cut ({}) before its JSON was complete: raise max_tokens",
            done.finish_reason
        )));
    }
    serde_json::from_str(&done.text)
        .map_err(|e| Error::Runtime(format!("the constrained answer did not parse: {e}")))
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
