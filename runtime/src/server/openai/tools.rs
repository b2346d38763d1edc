//! OpenAI tool calling: `tools` and `tool_choice` into the pool's [`ToolSpec`]s and
//! [`ToolChoice`], history with assistant `tool_calls` and `tool` messages, and answers read
//! back as `tool_calls`.
//!
//! The model's answer is constrained (see `slmfn_models::tool_call`), so a call's name is one
//! of the tools and its arguments obey the tool's schema by construction. One call per answer:
//! `parallel_tool_calls` allows several, it does not require them.

use serde::Deserialize;
use serde_json::{Value, json};
use slmfn_models::Grammar;
use slmfn_models::tool_call::{self, ToolCall, ToolChoice, ToolExample, ToolSpec};

use super::invalid;
use crate::server::error::ApiError;

/// The tools a chat request offers and how it wants them used.
#[derive(Clone, Debug)]
pub(super) struct Tools {
    pub(super) specs: Vec<ToolSpec>,
    pub(super) choice: ToolChoice,
}

#[derive(Debug, Deserialize)]
struct ToolWire {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<FunctionWire>,
}

#[derive(Debug, Deserialize)]
struct FunctionWire {
    name: Option<String>,
    description: Option<String>,
    parameters: Option<Value>,
    /// Extension: worked examples, `[{"request": "...", "arguments": {...}}]` (few-shot).
    #[serde(default)]
    examples: Vec<ToolExample>,
}

/// An assistant message's `tool_calls[i]`.
#[derive(Debug, Deserialize)]
struct CallWire {
    function: Option<CallFunctionWire>,
}

#[derive(Debug, Deserialize)]
struct CallFunctionWire {
    name: Option<String>,
    /// A JSON document, as a string (OpenAI's shape).
    arguments: Option<String>,
}

/// Reads `tools` and `tool_choice`. `None`: answer in text (no tools, or `tool_choice`
/// `none`). Each error names the field.
pub(super) fn parse(
    tools: Option<&[Value]>,
    tool_choice: Option<&Value>,
) -> Result<Option<Tools>, ApiError> {
    let choice = match tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => Some(ToolChoice::Auto),
            "required" => Some(ToolChoice::Required),
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!(
                        "tool_choice {other:?} is unknown: expected none, auto, required or \
                         {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            }
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                Some(ToolChoice::Function(name.to_string()))
            }
            _ => {
                return Err(invalid(
                    "tool_choice",
                    "tool_choice must be none, auto, required or {\"type\": \"function\", \
                     \"function\": {\"name\": ...}}",
                ));
            }
        },
    };
    let tools = tools.unwrap_or_default();
    if tools.is_empty() {
        return match choice {
            None | Some(ToolChoice::Auto) => Ok(None),
            Some(_) => Err(invalid(
                "tool_choice",
                "tool_choice asks for a tool call but the request has no tools",
            )),
        };
    }
    let specs = tools
        .iter()
        .enumerate()
        .map(|(i, t)| spec(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    let choice = choice.unwrap_or(ToolChoice::Auto);
    if let ToolChoice::Function(name) = &choice
        && !specs.iter().any(|s| &s.name == name)
    {
        return Err(invalid(
            "tool_choice",
            format!("tool_choice names the function {name:?}, which is not among the tools"),
        ));
    }
    tool_call::validate(&specs, &choice).map_err(|e| invalid("tools", e.to_string()))?;
    Ok(Some(Tools { specs, choice }))
}

fn spec(i: usize, value: &Value) -> Result<ToolSpec, ApiError> {
    let tool: ToolWire = serde_json::from_value(value.clone())
        .map_err(|e| invalid("tools", format!("tools[{i}] is not a tool: {e}")))?;
    if tool.kind.as_deref() != Some("function") {
        return Err(invalid(
            "tools",
            format!("tools[{i}].type must be \"function\""),
        ));
    }
    let Some(function) = tool.function else {
        return Err(invalid("tools", format!("tools[{i}].function is required")));
    };
    let name = function.name.unwrap_or_default();
    let valid_name = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid_name {
        return Err(invalid(
            "tools",
            format!("tools[{i}].function.name {name:?} must be 1 to 64 letters, digits, _ or -"),
        ));
    }
    let parameters = function
        .parameters
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() {
        return Err(invalid(
            "tools",
            format!("tools[{i}].function.parameters ({name}) must be a JSON schema object"),
        ));
    }
    Grammar::JsonSchema(parameters.clone())
        .check()
        .map_err(|e| {
            invalid(
                "tools",
                format!("tools[{i}].function.parameters ({name}): {e}"),
            )
        })?;
    Ok(ToolSpec {
        name,
        description: function.description.unwrap_or_default(),
        parameters,
        examples: function.examples,
    })
}

/// An assistant message's `tool_calls`, as calls. `at` is the message's index, for errors.
pub(super) fn history_calls(at: usize, calls: &Value) -> Result<Vec<ToolCall>, ApiError> {
    let field = || format!("messages[{at}].tool_calls");
    let calls: Vec<CallWire> = serde_json::from_value(calls.clone()).map_err(|e| {
        invalid(
            "messages",
            format!("{} is not a list of calls: {e}", field()),
        )
    })?;
    calls
        .into_iter()
        .enumerate()
        .map(|(j, call)| {
            let f = call.function.ok_or_else(|| {
                invalid("messages", format!("{}[{j}].function is required", field()))
            })?;
            let name = f.name.ok_or_else(|| {
                invalid(
                    "messages",
                    format!("{}[{j}].function.name is required", field()),
                )
            })?;
            let arguments = match f.arguments.as_deref() {
                None | Some("") => json!({}),
                Some(text) => serde_json::from_str(text).map_err(|e| {
                    invalid(
                        "messages",
                        format!("{}[{j}].function.arguments is not JSON: {e}", field()),
                    )
                })?,
            };
            Ok(ToolCall { name, arguments })
        })
        .collect()
}
