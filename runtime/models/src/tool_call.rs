//! Tool calling for chat models whose template has no tool support (SmolLM2's): the tools are
//! listed in the system prompt, and the answer is constrained to a call
//! `{"name": ..., "arguments": ...}` whose arguments obey the tool's schema, closed to
//! properties it does not declare — or, under [`ToolChoice::Auto`], to either such a call or
//! plain text that does not start with `{`.
//!
//! # Layout
//!
//! - [`ToolSpec`], [`ToolChoice`], [`ToolCall`]: what a caller offers, asks for, gets back.
//! - [`with_tools`]: the conversation with the tool block leading the system prompt (a stable
//!   position, so the prompt cache reuses it across calls), past calls written the way the
//!   model is asked to write them, tool results as turns that say whose result they are.
//! - [`grammar`]: the constraint on the answer.
//! - [`parse`]: the answer read back as text or a call.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::constraint::Grammar;
use crate::error::{Error, Result};
use crate::template::Message;

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model writes to call it.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// JSON schema of its arguments (an object schema).
    pub parameters: Value,
}

/// Whether and which tool the answer calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model answers in text or calls a tool.
    Auto,
    /// The model calls one of the tools.
    Required,
    /// The model calls this tool.
    Function(String),
    /// The model answers in text; the tools stay listed in the prompt as under `Auto` (an
    /// agent's last step reuses the cached prefix of the steps that called tools).
    None,
}

/// A call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments, valid against the tool's schema.
    pub arguments: Value,
}

/// An answer generated under [`grammar`].
#[derive(Clone, Debug, PartialEq)]
pub enum ToolAnswer {
    /// Plain text.
    Text(String),
    /// Tool calls (one: the grammar allows one per answer).
    Calls(Vec<ToolCall>),
}

/// Checks the tools and the choice: unique, non-empty names; object schemas; a named choice
/// that names one of them. The errors name the offending tool.
pub fn validate(tools: &[ToolSpec], choice: &ToolChoice) -> Result<()> {
    if tools.is_empty() {
        return Err(Error::InvalidInput("tools must not be empty".into()));
    }
    for (i, tool) in tools.iter().enumerate() {
        if tool.name.is_empty() {
            return Err(Error::InvalidInput(format!("tools[{i}] has an empty name")));
        }
        if tools[..i].iter().any(|t| t.name == tool.name) {
            return Err(Error::InvalidInput(format!(
                "tools[{i}]: the name {:?} is used twice",
                tool.name
            )));
        }
        match &tool.parameters {
            Value::Object(_) | Value::Bool(true) => {}
            _ => {
                return Err(Error::InvalidInput(format!(
                    "tools[{i}] ({}): parameters must be a JSON schema object",
                    tool.name
                )));
            }
        }
    }
    if let ToolChoice::Function(name) = choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(Error::InvalidInput(format!(
            "tool_choice names the function {name:?}, which is not among the tools"
        )));
    }
    Ok(())
}

/// The conversation rewritten for a model that reads tools from its system prompt: the tool
/// block first in the system message (one is added when there is none; the same whatever the
/// choice, so an agent's steps share it as a cached prefix), assistant calls as the JSON the
/// model is asked to write, tool results as user turns.
pub fn with_tools(messages: &[Message], tools: &[ToolSpec], _choice: &ToolChoice) -> Vec<Message> {
    let block = tool_block(tools);
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut rest = messages;
    match messages.first() {
        Some(first) if first.role == "system" => {
            out.push(Message::system(format!("{block}\n\n{}", first.content)));
            rest = &messages[1..];
        }
        _ => out.push(Message::system(block)),
    }
    for m in rest {
        out.push(if m.role == "tool" {
            Message::user(format!("Tool result:\n{}", m.content))
        } else {
            m.clone()
        });
    }
    out
}

/// An assistant turn that made `calls`, written as the model writes calls.
pub fn call_message(calls: &[ToolCall]) -> Message {
    let text: Vec<String> = calls.iter().map(call_json).collect();
    Message::assistant(text.join("\n"))
}

fn call_json(call: &ToolCall) -> String {
    json!({"name": call.name, "arguments": call.arguments}).to_string()
}

fn tool_block(tools: &[ToolSpec]) -> String {
    let mut block = String::from("You can call these tools:\n");
    for tool in tools {
        let line = json!({
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        });
        block.push_str(&line.to_string());
        block.push('\n');
    }
    block.push_str(
        "To call a tool, answer with only a JSON object: {\"name\": <the tool's name>, \
         \"arguments\": <its arguments>}.",
    );
    block.push_str(" When no tool is needed, answer in plain text.");
    block
}

/// The constraint on an answer under `choice`: a call of one of `tools` (of the named one),
/// or, under [`ToolChoice::Auto`], a call or text that does not start with `{`.
pub fn grammar(tools: &[ToolSpec], choice: &ToolChoice) -> Grammar {
    let offered: Vec<&ToolSpec> = match choice {
        ToolChoice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
        _ => tools.iter().collect(),
    };
    let calls: Vec<Value> = offered
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"const": t.name},
                    "arguments": closed(&t.parameters),
                },
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let call = match <[Value; 1]>::try_from(calls) {
        Ok([one]) => one,
        Err(calls) => json!({"anyOf": calls}),
    };
    match choice {
        ToolChoice::None => Grammar::Lark(format!("start: TEXT\n{TEXT}")),
        ToolChoice::Auto => {
            let schema = with_whitespace_options(call);
            Grammar::Lark(format!("start: call | TEXT\ncall: %json {schema}\n{TEXT}"))
        }
        _ => Grammar::JsonSchema(call),
    }
}

/// A text answer: anything that does not start with `{` or white space (so never a call).
const TEXT: &str = "TEXT: /[^{\\s][\\s\\S]*/\n";

/// The largest integer every JSON reader keeps exactly (JavaScript's `Number.MAX_SAFE_INTEGER`).
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// `schema` with `additionalProperties: false` on every object schema that lists properties
/// and says nothing about others (OpenAI's strict mode does the same): a call writes the
/// arguments the tool declares, not inventions a permissive schema would let through. Integers
/// without bounds get [`MAX_SAFE_INTEGER`]'s.
fn closed(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut map: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "properties" | "$defs" | "definitions" => match v {
                            Value::Object(props) => Value::Object(
                                props.iter().map(|(n, s)| (n.clone(), closed(s))).collect(),
                            ),
                            other => other.clone(),
                        },
                        "items" | "additionalItems" => closed(v),
                        "anyOf" | "oneOf" | "allOf" | "prefixItems" => match v {
                            Value::Array(items) => Value::Array(items.iter().map(closed).collect()),
                            other => other.clone(),
                        },
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            // An unbounded integer can be written with more digits than any JSON reader keeps
            // exactly: hold it to the integers every reader does (±2^53 - 1).
            // A width `format` (schemars writes `uint32` for a u32) bounds it tighter.
            if map.get("type").and_then(Value::as_str) == Some("integer") {
                let (low, high) = match map.get("format").and_then(Value::as_str) {
                    Some("uint8") => (0, u8::MAX as i64),
                    Some("int8") => (i8::MIN as i64, i8::MAX as i64),
                    Some("uint16") => (0, u16::MAX as i64),
                    Some("int16") => (i16::MIN as i64, i16::MAX as i64),
                    Some("uint32") => (0, u32::MAX as i64),
                    Some("int32") => (i32::MIN as i64, i32::MAX as i64),
                    Some("uint64" | "uint") => (0, MAX_SAFE_INTEGER),
                    _ => (-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
                };
                map.entry("minimum").or_insert(json!(low));
                map.entry("maximum").or_insert(json!(high));
                // Said by the bounds now; llguidance knows no width formats.
                map.remove("format");
            }
            Value::Object(map)
        }
        other => other.clone(),
    }
}

/// `schema` with the whitespace options `Grammar::JsonSchema` applies (a `%json` block inside
/// a Lark grammar gets llguidance's defaults otherwise).
fn with_whitespace_options(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            }),
        );
    }
    schema
}

/// Reads an answer generated under [`grammar`]: a call when it is a JSON object with a name
/// and arguments, else text.
pub fn parse(text: &str) -> ToolAnswer {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(trimmed)
        && let Some(Value::String(name)) = map.remove("name")
    {
        let arguments = map.remove("arguments").unwrap_or_else(|| json!({}));
        return ToolAnswer::Calls(vec![ToolCall { name, arguments }]);
    }
    ToolAnswer::Text(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<ToolSpec> {
        vec![
            ToolSpec {
                name: "get_price".into(),
                description: "Latest price of a ticker".into(),
                parameters: json!({"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}),
            },
            ToolSpec {
                name: "search_faq".into(),
                description: "Search the FAQ".into(),
                parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
            },
        ]
    }

    #[test]
    fn bad_tools_and_choices_are_named() {
        let mut dup = tools();
        dup[1].name = "get_price".into();
        let err = validate(&dup, &ToolChoice::Auto).unwrap_err().to_string();
        assert!(err.contains("tools[1]") && err.contains("twice"), "{err}");
        let mut bad = tools();
        bad[0].parameters = json!("object");
        let err = validate(&bad, &ToolChoice::Auto).unwrap_err().to_string();
        assert!(err.contains("tools[0] (get_price)"), "{err}");
        let err = validate(&tools(), &ToolChoice::Function("nope".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\""), "{err}");
        validate(&tools(), &ToolChoice::Required).unwrap();
    }

    #[test]
    fn the_tool_block_leads_the_system_prompt_and_history_is_rewritten() {
        let call = ToolCall {
            name: "get_price".into(),
            arguments: json!({"ticker": "ACME"}),
        };
        let messages = vec![
            Message::system("Be brief."),
            Message::user("ACME?"),
            call_message(std::slice::from_ref(&call)),
            Message::new("tool", "{\"price\": 3}"),
        ];
        let out = with_tools(&messages, &tools(), &ToolChoice::Auto);
        assert_eq!(out.len(), 4);
        assert!(out[0].content.starts_with("You can call these tools:\n{"));
        assert!(out[0].content.ends_with("plain text.\n\nBe brief."));
        assert_eq!(out[2].content, call_json(&call));
        assert_eq!(parse(&out[2].content), ToolAnswer::Calls(vec![call]));
        assert_eq!(
            (out[3].role.as_str(), out[3].content.as_str()),
            ("user", "Tool result:\n{\"price\": 3}")
        );
        // Without a system message one is added; the block is the same for the same tools.
        let bare = with_tools(&messages[1..2], &tools(), &ToolChoice::Auto);
        assert!(out[0].content.starts_with(&bare[0].content));
    }

    #[test]
    fn call_arguments_are_closed_to_undeclared_properties() {
        let open = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "c": {"type": "object", "properties": {}, "additionalProperties": true},
        }});
        let shut = closed(&open);
        assert_eq!(shut["additionalProperties"], false);
        assert_eq!(shut["properties"]["a"]["additionalProperties"], false);
        assert_eq!(shut["properties"]["c"]["additionalProperties"], true);
        let n = closed(&json!({"type": "integer", "minimum": 1}));
        assert_eq!(
            n,
            json!({"type": "integer", "minimum": 1, "maximum": MAX_SAFE_INTEGER})
        );
        let u32_schema = closed(&json!({"type": "integer", "format": "uint32", "minimum": 0}));
        assert_eq!(u32_schema["maximum"], u32::MAX as i64);
        assert!(u32_schema.get("format").is_none());
    }

    #[test]
    fn answers_parse_as_calls_or_text() {
        assert_eq!(
            parse(r#"{"name": "search_faq", "arguments": {"query": "refund"}}"#),
            ToolAnswer::Calls(vec![ToolCall {
                name: "search_faq".into(),
                arguments: json!({"query": "refund"})
            }])
        );
        assert_eq!(parse("Hello there"), ToolAnswer::Text("Hello there".into()));
    }
}
