//! OpenAI's response bodies as typed structs (the requests are in `wire`): completions, chat
//! completions, their stream chunks, tool calls, embeddings and usage.

use serde::Serialize;
use slmfn_models::{ToolCall, Usage};

/// A chat completion, a text completion, or one chunk of either streamed.
#[derive(Debug, Serialize)]
pub(super) struct CompletionObject<'a> {
    pub(super) id: &'a str,
    /// `chat.completion`, `chat.completion.chunk` or `text_completion`.
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) model: &'a str,
    /// OpenAI's field; we have no fingerprint (`null`).
    pub(super) system_fingerprint: Option<&'static str>,
    pub(super) choices: Vec<Choice>,
    /// Always on a whole answer; on a stream only in the last chunk, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<UsageObject>,
}

/// One choice (we answer one).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum Choice {
    /// A whole chat answer.
    Message {
        index: u32,
        message: AssistantMessage,
        logprobs: Option<()>,
        finish_reason: &'static str,
    },
    /// A streamed chat chunk.
    Delta {
        index: u32,
        delta: Delta,
        logprobs: Option<()>,
        finish_reason: Option<&'static str>,
    },
    /// A text completion, whole or a streamed piece (then `finish_reason` is `null` until the
    /// last).
    Text {
        index: u32,
        text: String,
        logprobs: Option<()>,
        finish_reason: Option<&'static str>,
    },
}

impl Choice {
    /// The only choice of a whole chat answer.
    pub(super) fn message(message: AssistantMessage, finish_reason: &'static str) -> Self {
        Choice::Message {
            index: 0,
            message,
            logprobs: None,
            finish_reason,
        }
    }

    /// The only choice of a chat chunk.
    pub(super) fn delta(delta: Delta, finish_reason: Option<&'static str>) -> Self {
        Choice::Delta {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }
    }

    /// The only choice of a text completion or chunk.
    pub(super) fn text(text: String, finish_reason: Option<&'static str>) -> Self {
        Choice::Text {
            index: 0,
            text,
            logprobs: None,
            finish_reason,
        }
    }
}

/// The assistant's message of a whole chat answer: text, or tool calls (`content` `null`).
#[derive(Debug, Serialize)]
pub(super) struct AssistantMessage {
    pub(super) role: &'static str,
    pub(super) content: Option<String>,
    pub(super) refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_calls: Option<Vec<ToolCallObject>>,
}

/// What a chat chunk adds: the role (first chunk), text, or whole tool calls; empty in the
/// finishing chunk.
#[derive(Debug, Default, Serialize)]
pub(super) struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_calls: Option<Vec<ToolCallObject>>,
}

/// OpenAI's `tool_calls[i]`, with a fresh id; `index` in stream deltas only.
#[derive(Debug, Serialize)]
pub(super) struct ToolCallObject {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall,
}

#[derive(Debug, Serialize)]
struct FunctionCall {
    name: String,
    /// The arguments as JSON text, as OpenAI sends them.
    arguments: String,
}

impl ToolCallObject {
    /// `call` as OpenAI writes it; `index` for a stream delta.
    pub(super) fn new(call: &ToolCall, index: Option<usize>) -> Self {
        Self {
            index,
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            kind: "function",
            function: FunctionCall {
                name: call.name.clone(),
                arguments: call.arguments.to_string(),
            },
        }
    }
}

/// The tokens a request used.
#[derive(Debug, Serialize)]
pub(super) struct UsageObject {
    prompt_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<usize>,
    total_tokens: usize,
    /// OpenAI's field for prompt tokens served from a cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Serialize)]
struct PromptTokensDetails {
    cached_tokens: usize,
}

impl UsageObject {
    /// A generation's usage.
    pub(super) fn generation(usage: &Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: Some(usage.completion_tokens),
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
            }),
        }
    }

    /// An embedding call's usage (prompt tokens only).
    pub(super) fn embedding(prompt_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens: None,
            total_tokens: prompt_tokens,
            prompt_tokens_details: None,
        }
    }
}

/// `POST /v1/embeddings`'s answer.
#[derive(Debug, Serialize)]
pub(super) struct EmbeddingList {
    pub(super) object: &'static str,
    pub(super) data: Vec<EmbeddingObject>,
    pub(super) model: String,
    pub(super) usage: UsageObject,
}

/// One input's vector: floats, or their little-endian bytes in base64.
#[derive(Debug, Serialize)]
pub(super) struct EmbeddingObject {
    pub(super) object: &'static str,
    pub(super) index: usize,
    pub(super) embedding: EmbeddingVector,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}
