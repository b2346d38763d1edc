//! OpenAI's request shapes and their translation to the pool's [`Prompt`] and
//! [`SamplingOverrides`]. Responses are built as JSON in [`super::generate`].
//!
//! Unknown fields are ignored, as OpenAI's own server does, so newer clients keep working;
//! known fields we cannot honour are refused (see [`Sampling::overrides`]).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json};
use slmfn_models::tool_select::{Technique, ToolRequest};
use slmfn_models::{Grammar, Message, Prompt};

use super::tools::{self, Tools};
use super::{invalid, unsupported};
use crate::inference::SamplingOverrides;
use crate::server::error::ApiError;

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub(super) struct ChatRequest {
    pub(super) model: Option<String>,
    pub(super) messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub(super) sampling: Sampling,
    pub(super) max_completion_tokens: Option<u64>,
    pub(super) response_format: Option<ResponseFormat>,
    pub(super) tools: Option<Vec<Value>>,
    pub(super) tool_choice: Option<Value>,
    /// Extension: how a tool call is chosen (`grammar`, `spans`, `scores`: the default); for
    /// comparing the techniques (see `slmfn_models::tool_select::Technique`).
    pub(super) tool_selection: Option<Technique>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub(super) struct CompletionRequest {
    pub(super) model: Option<String>,
    pub(super) prompt: Option<Value>,
    #[serde(flatten)]
    pub(super) sampling: Sampling,
    pub(super) echo: Option<bool>,
    pub(super) best_of: Option<u32>,
    pub(super) suffix: Option<String>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub(super) struct EmbeddingRequest {
    pub(super) model: Option<String>,
    pub(super) input: Option<Value>,
    /// `float` (default) or `base64` (little-endian f32, what the Python client asks for).
    pub(super) encoding_format: Option<String>,
    /// Refused unless it is the model's own dimension (no truncated embeddings).
    pub(super) dimensions: Option<u64>,
}

/// The sampling and streaming fields both generation endpoints share.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Sampling {
    max_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    n: Option<u32>,
    pub(super) stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Extensions most local servers (llama.cpp, vLLM, Ollama) accept.
    top_k: Option<u32>,
    repeat_penalty: Option<f32>,
    /// Refused unless neutral: the sampler has no frequency or presence penalty.
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    logit_bias: Option<HashMap<String, f32>>,
    /// Refused when set: no log-probabilities are reported.
    logprobs: Option<Value>,
    top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `response_format`: `text`, `json_object` or `json_schema` (+ `json_schema.schema`).
#[derive(Debug, Deserialize)]
pub(super) struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<JsonSchemaFormat>,
}

/// `response_format.json_schema`. The schema is enforced whether `strict` is set or not
/// (constrained decoding costs nothing in accuracy); `name` and `description` are labels.
#[derive(Debug, Deserialize)]
struct JsonSchemaFormat {
    schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// An assistant's calls (`[{id, type, function: {name, arguments}}]`).
    tool_calls: Option<Value>,
    /// A `tool` message's answer to this call.
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

impl Sampling {
    /// Whether the answer is streamed.
    pub(super) fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub(super) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The call's overrides of the model's defaults; `max_tokens` is the request's token
    /// bound (chat's `max_completion_tokens` wins over the older `max_tokens`).
    pub(super) fn overrides(&self, max_tokens: Option<u64>) -> Result<SamplingOverrides, ApiError> {
        match self.n {
            None | Some(1) => {}
            Some(n) => {
                return Err(unsupported(
                    "n",
                    format!("n = {n} is not supported: this runtime returns exactly one choice"),
                ));
            }
        }
        let neutral = |v: Option<f32>| v.is_none_or(|v| v == 0.0);
        if !neutral(self.frequency_penalty) {
            return Err(unsupported(
                "frequency_penalty",
                "frequency_penalty is not supported (use repeat_penalty)",
            ));
        }
        if !neutral(self.presence_penalty) {
            return Err(unsupported(
                "presence_penalty",
                "presence_penalty is not supported (use repeat_penalty)",
            ));
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(unsupported("logit_bias", "logit_bias is not supported"));
        }
        let wants_logprobs = match &self.logprobs {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        };
        if wants_logprobs || self.top_logprobs.is_some_and(|n| n > 0) {
            return Err(unsupported("logprobs", "logprobs are not supported"));
        }
        let max_tokens = max_tokens
            .or(self.max_tokens)
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX));
        if max_tokens == Some(0) {
            return Err(invalid("max_tokens", "max_tokens must be at least 1"));
        }
        Ok(SamplingOverrides {
            max_tokens,
            max_tokens_cap: None,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k.map(|k| k as usize),
            repeat_penalty: self.repeat_penalty,
            // OpenAI seeds are signed; any 64 bits seed the RNG.
            seed: self.seed.map(|s| s as u64),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
            grammar: None,
        })
    }
}

impl ChatRequest {
    /// The constraint `response_format` asks for: none for `text`, any JSON object for
    /// `json_object`, the schema for `json_schema`.
    pub(super) fn grammar(&self) -> Result<Option<Grammar>, ApiError> {
        let Some(f) = &self.response_format else {
            return Ok(None);
        };
        match f.kind.as_str() {
            "text" => Ok(None),
            "json_object" => Ok(Some(Grammar::JsonSchema(json!({"type": "object"})))),
            "json_schema" => match f.json_schema.as_ref().and_then(|j| j.schema.as_ref()) {
                Some(schema) => {
                    let grammar = Grammar::JsonSchema(schema.clone());
                    grammar.check().map_err(|e| {
                        invalid("response_format.json_schema.schema", e.to_string())
                    })?;
                    Ok(Some(grammar))
                }
                None => Err(invalid(
                    "response_format.json_schema.schema",
                    "response_format of type json_schema needs json_schema.schema, the JSON \
                     schema of the answer",
                )),
            },
            other => Err(invalid(
                "response_format.type",
                format!(
                    "response_format type {other:?} is unknown: expected text, json_object or \
                     json_schema"
                ),
            )),
        }
    }

    /// What the request asks of the pool: the prompt (tools listed in it), the constraint on
    /// the answer (a tool call, or `response_format`), the tools to read calls back with.
    pub(super) fn plan(&self) -> Result<Plan, ApiError> {
        let tools = tools::parse(self.tools.as_deref(), self.tool_choice.as_ref())?;
        let grammar = self.grammar()?;
        if self.messages.is_empty() {
            return Err(invalid("messages", "messages must not be empty"));
        }
        let messages = self
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| m.to_model(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match tools {
            Some(tools) => Plan {
                // A text answer (under `auto` or `none`) follows `response_format`.
                prompt: Prompt::Tools(Box::new(ToolRequest {
                    messages,
                    tools: tools.specs.clone(),
                    choice: tools.choice.clone(),
                    technique: self.tool_selection.unwrap_or_default(),
                    answer: grammar,
                    similarity: None,
                })),
                grammar: None,
                tools: Some(tools),
            },
            None => Plan {
                prompt: Prompt::Chat(messages),
                grammar,
                tools: None,
            },
        })
    }
}

/// A request translated for the pool.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) prompt: Prompt,
    pub(super) grammar: Option<Grammar>,
    /// Set when the answer may be a tool call.
    pub(super) tools: Option<Tools>,
}

impl ChatMessage {
    /// The message at index `at` for the pool.
    fn to_model(&self, at: usize) -> Result<Message, ApiError> {
        let role = match self.role.as_str() {
            // OpenAI's newer name for system instructions; chat templates know `system`.
            "developer" | "system" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "tool",
            other => {
                return Err(invalid(
                    "messages",
                    format!(
                        "unknown message role {other:?} (use system, developer, user, assistant or tool)"
                    ),
                ));
            }
        };
        if role == "tool" && self.tool_call_id.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "messages",
                format!("messages[{at}] has role tool but no tool_call_id"),
            ));
        }
        if let Some(calls) = self.tool_calls.as_ref().filter(|c| !c.is_null()) {
            if role != "assistant" {
                return Err(invalid(
                    "messages",
                    format!("messages[{at}]: only assistant messages carry tool_calls"),
                ));
            }
            let calls = tools::history_calls(at, calls)?;
            let content = match &self.content {
                Some(Content::Text(t)) => t.clone(),
                _ => String::new(),
            };
            return Ok(Message {
                content,
                ..Message::calls(calls)
            });
        }
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => texts.push(t.as_str()),
                        ("text", None) => {
                            return Err(invalid("messages", "a text content part needs `text`"));
                        }
                        (other, _) => {
                            return Err(unsupported(
                                "messages",
                                format!(
                                    "content parts of type {other:?} are not supported (text only)"
                                ),
                            ));
                        }
                    }
                }
                texts.join("\n")
            }
        };
        Ok(Message {
            role: role.to_string(),
            content,
            tool_call_id: self.tool_call_id.clone().filter(|_| role == "tool"),
            ..Message::default()
        })
    }
}

impl CompletionRequest {
    /// Refuses what would change the answer's form.
    pub(super) fn check_unsupported(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) {
            return Err(unsupported("echo", "echo is not supported"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(unsupported("best_of", "best_of > 1 is not supported"));
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(unsupported(
                "suffix",
                "suffix (fill-in-the-middle) is not supported",
            ));
        }
        Ok(())
    }

    /// The prompt: a string or a list of token ids, alone or as a one-element list (OpenAI
    /// also allows a batch of prompts; that is `n > 1` in disguise and refused).
    pub(super) fn prompt(&self) -> Result<Prompt, ApiError> {
        match &self.prompt {
            None => Err(invalid("prompt", "prompt is required")),
            Some(Value::Array(items)) if items.len() == 1 && !items[0].is_u64() => {
                single_prompt(&items[0])
            }
            Some(Value::Array(items)) if items.len() > 1 && !items.iter().all(Value::is_u64) => {
                Err(unsupported(
                    "prompt",
                    "a batch of prompts is not supported: send one prompt per request",
                ))
            }
            Some(v) => single_prompt(v),
        }
    }
}

fn single_prompt(value: &Value) -> Result<Prompt, ApiError> {
    match value {
        Value::String(s) => Ok(Prompt::Text(s.clone())),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => items
            .iter()
            .map(|t| {
                t.as_u64()
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or_else(|| invalid("prompt", format!("token id {t} is out of range")))
            })
            .collect::<Result<Vec<u32>, _>>()
            .map(Prompt::Tokens),
        _ => Err(invalid(
            "prompt",
            "prompt must be a string or a list of token ids",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn stop_is_a_string_or_a_list_and_newer_token_bound_wins() {
        let req = chat(json!({"messages": [], "stop": "\n", "max_tokens": 5, "seed": -1}));
        let o = req.sampling.overrides(None).unwrap();
        assert_eq!(o.stop, vec!["\n"]);
        assert_eq!(o.max_tokens, Some(5));
        assert_eq!(o.seed, Some(u64::MAX));
        let req = chat(json!({"messages": [], "stop": ["a", "b"], "max_tokens": 5,
                              "max_completion_tokens": 7}));
        let o = req.sampling.overrides(req.max_completion_tokens).unwrap();
        assert_eq!(o.stop, vec!["a", "b"]);
        assert_eq!(o.max_tokens, Some(7));
    }

    #[test]
    fn messages_map_roles_and_join_text_parts() {
        let req = chat(json!({"messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null},
        ]}));
        let Prompt::Chat(messages) = req.plan().unwrap().prompt else {
            panic!("a chat prompt")
        };
        let flat: Vec<(&str, &str)> = messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            flat,
            [("system", "be brief"), ("user", "a\nb"), ("assistant", "")]
        );
    }

    #[test]
    fn completion_prompts_are_text_or_tokens_one_at_a_time() {
        let prompt = |p: Value| {
            serde_json::from_value::<CompletionRequest>(json!({ "prompt": p }))
                .unwrap()
                .prompt()
        };
        assert_eq!(prompt(json!("hi")).unwrap(), Prompt::Text("hi".into()));
        assert_eq!(prompt(json!(["hi"])).unwrap(), Prompt::Text("hi".into()));
        assert_eq!(prompt(json!([1, 2])).unwrap(), Prompt::Tokens(vec![1, 2]));
        assert_eq!(prompt(json!([[1, 2]])).unwrap(), Prompt::Tokens(vec![1, 2]));
        assert_eq!(prompt(json!(["a", "b"])).unwrap_err().status(), 400);
        assert_eq!(prompt(json!([[1], [2]])).unwrap_err().status(), 400);
        assert_eq!(prompt(json!([])).unwrap_err().status(), 400);
        assert_eq!(prompt(json!(5_000_000_000u64)).unwrap_err().status(), 400);
        assert_eq!(prompt(json!([5_000_000_000u64])).unwrap_err().status(), 400);
    }
}

#[cfg(test)]
mod tool_selection_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unknown_tool_selection_is_an_error() {
        let ok: ChatRequest =
            serde_json::from_value(json!({"messages": [], "tool_selection": "spans"})).unwrap();
        assert_eq!(ok.tool_selection, Some(Technique::Spans));
        let err = serde_json::from_value::<ChatRequest>(
            json!({"messages": [], "tool_selection": "magic"}),
        );
        assert!(err.is_err(), "{err:?}");
    }
}
