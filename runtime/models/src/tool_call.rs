//! Tool calling: how a model's prompt lists tools and how its answer writes a call
//! ([`ToolFormat`], read off the chat template), and the constraint that makes every call
//! valid by construction — its arguments obey the tool's schema, closed to properties it does
//! not declare — or, under [`ToolChoice::Auto`], lets the answer be text (or the JSON of a
//! `response_format`) instead.
//!
//! # Layout
//!
//! - [`ToolSpec`], [`ToolChoice`], [`ToolCall`]: what a caller offers, asks for, gets back.
//! - [`ToolFormat`]: the model's own format when its template takes `tools` (Hermes-style
//!   `<tool_call>` blocks: Qwen2.5, Qwen3; Llama 3.x's `{"name", "parameters"}`), else the
//!   documented fallback for templates without tool support (SmolLM2's): the tool block
//!   leading the system prompt (a stable position, so the prompt cache reuses it across
//!   calls), calls as `{"name": ..., "arguments": ...}`, results as user turns that say whose
//!   result they are.
//! - [`ToolFormat::prompt`], [`ToolFormat::grammar`], [`ToolFormat::parse`]: the prompt, the
//!   constraint on the answer, the answer read back as text or a call.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::constraint::Grammar;
use crate::error::{Error, Result};
use crate::message::Message;
pub use crate::message::ToolCall;
use crate::model::Model;
use crate::template::ChatTemplate;

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
    /// Worked examples, shown to the model as earlier turns of the conversation (few-shot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<ToolExample>,
}

/// A worked example of a call: a request and the arguments it takes. [`ToolFormat::prompt`]
/// puts every tool's examples after the system prompt, before the conversation, as a user
/// turn and the assistant's call each — the same for every request with these tools, so the
/// prompt cache reuses them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolExample {
    /// What a user asks.
    pub request: String,
    /// The arguments the call takes (an object valid against the tool's schema).
    pub arguments: Value,
}

impl ToolSpec {
    /// The definition as templates read `tools` (OpenAI's shape).
    fn definition(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        })
    }
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

/// An answer generated under [`ToolFormat::grammar`].
#[derive(Clone, Debug, PartialEq)]
pub enum ToolAnswer {
    /// Plain text (or the JSON a `response_format` asked for).
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
        for (j, example) in tool.examples.iter().enumerate() {
            if example.request.trim().is_empty() || !example.arguments.is_object() {
                return Err(Error::InvalidInput(format!(
                    "tools[{i}] ({}): examples[{j}] needs a non-empty request and arguments \
                     that are a JSON object",
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

/// How a model's prompt lists tools and how its answer writes a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// For templates without tool support (SmolLM2's): the tool block leads the system
    /// prompt, a call is `{"name": ..., "arguments": ...}`, a tool result is a user turn
    /// `Tool result:` + the result.
    SystemPrompt,
    /// Hermes-style templates that take `tools` (Qwen2.5, Qwen3, Hermes): the template lists
    /// the tools and renders calls and results; a call is
    /// `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`.
    Hermes,
    /// Llama 3.x templates that take `tools`: the template lists them; a call is
    /// `{"name": ..., "parameters": ...}`.
    Llama3,
}

impl ToolFormat {
    /// The format `template` speaks: its own when it reads `tools` and writes calls in a
    /// format this module knows, else [`ToolFormat::SystemPrompt`].
    pub fn of(template: &ChatTemplate) -> Self {
        let source = template.source();
        if template.is_fallback() || !source.contains("tools") {
            Self::SystemPrompt
        } else if source.contains("<tool_call>") {
            Self::Hermes
        } else if source.contains("<|start_header_id|>") && source.contains("\"parameters\"") {
            Self::Llama3
        } else {
            Self::SystemPrompt
        }
    }

    /// What a call's JSON is wrapped in.
    fn wrap(self) -> (&'static str, &'static str) {
        match self {
            Self::Hermes => ("<tool_call>\n", "\n</tool_call>"),
            Self::SystemPrompt | Self::Llama3 => ("", ""),
        }
    }

    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            Self::Llama3 => "parameters",
            Self::SystemPrompt | Self::Hermes => "arguments",
        }
    }

    /// What an answer that calls a tool starts with, up to the tool's name.
    pub fn call_prefix(self) -> String {
        format!("{}{{\"name\": \"", self.wrap().0)
    }

    /// Prompt tokens for `messages` with `tools` listed (the same list whatever the choice,
    /// so an agent's steps share it as a cached prefix; past calls as the model writes them).
    pub fn prompt(
        self,
        model: &Model,
        messages: &[Message],
        tools: &[ToolSpec],
    ) -> Result<Vec<u32>> {
        let messages = with_examples(messages, tools);
        match self {
            Self::SystemPrompt => model.encode_chat(&with_tools(&messages, tools)),
            Self::Hermes | Self::Llama3 => {
                let definitions: Vec<Value> = tools.iter().map(ToolSpec::definition).collect();
                model.encode_chat_with_tools(&messages, &definitions)
            }
        }
    }

    /// The constraint on an answer under `choice`: a call of one of `tools` (of the named
    /// one); under [`ToolChoice::Auto`] a call or the answer `answer` constrains (text that
    /// cannot be read as a call when `None`); under [`ToolChoice::None`] that answer only.
    /// `answer` (a `response_format`) combines with `auto` only as a JSON schema.
    pub fn grammar(
        self,
        tools: &[ToolSpec],
        choice: &ToolChoice,
        answer: Option<&Grammar>,
    ) -> Result<Grammar> {
        check_answer(choice, answer)?;
        let (open, close) = self.wrap();
        let text = if open.is_empty() { TEXT } else { TEXT_NOT_TAG };
        if *choice == ToolChoice::None {
            return Ok(answer
                .cloned()
                .unwrap_or_else(|| Grammar::Lark(format!("start: TEXT\n{text}"))));
        }
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
                        self.arguments_key(): closed(&t.parameters),
                    },
                    "required": ["name", self.arguments_key()],
                    "additionalProperties": false,
                })
            })
            .collect();
        let call = match <[Value; 1]>::try_from(calls) {
            Ok([one]) => one,
            Err(calls) => json!({"anyOf": calls}),
        };
        if *choice != ToolChoice::Auto && open.is_empty() {
            return Ok(Grammar::JsonSchema(call));
        }
        let call_rule = format!(
            "call: {} %json {} {}\n",
            lark_literal(open),
            with_whitespace_options(call),
            lark_literal(close),
        );
        if *choice != ToolChoice::Auto {
            return Ok(Grammar::Lark(format!("start: call\n{call_rule}")));
        }
        // A Lark or regex answer under `auto` was refused by `check_answer`.
        let answer_rule = match answer {
            Some(Grammar::JsonSchema(schema)) => format!(
                "answer: %json {}\n",
                with_whitespace_options(schema.clone())
            ),
            _ => format!("answer: TEXT\n{text}"),
        };
        Ok(Grammar::Lark(format!(
            "start: call | answer\n{call_rule}{answer_rule}"
        )))
    }

    /// Reads an answer generated under [`ToolFormat::grammar`]: a call when it is a call of
    /// one of `tools` as this format writes calls, else text.
    pub fn parse(self, text: &str, tools: &[ToolSpec]) -> ToolAnswer {
        let (open, close) = self.wrap();
        let inner = text.trim();
        let inner = match (inner.strip_prefix(open.trim_end()), open.is_empty()) {
            (_, true) => Some(inner),
            (Some(rest), false) => rest.strip_suffix(close.trim_start()),
            (None, false) => None,
        };
        if let Some(inner) = inner.map(str::trim)
            && inner.starts_with('{')
            && let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(inner)
            && let Some(Value::String(name)) = map.get("name").cloned()
            && tools.iter().any(|t| t.name == name)
            && map.keys().all(|k| k == "name" || k == self.arguments_key())
        {
            let arguments = map
                .remove(self.arguments_key())
                .unwrap_or_else(|| json!({}));
            return ToolAnswer::Calls(vec![ToolCall { name, arguments }]);
        }
        ToolAnswer::Text(text.to_string())
    }
}

/// Checks that `answer` (a `response_format`) can constrain a text answer under `choice`:
/// under `auto` a text answer and a call are alternatives of one grammar, which takes a JSON
/// schema but not a Lark grammar or a regex.
pub fn check_answer(choice: &ToolChoice, answer: Option<&Grammar>) -> Result<()> {
    match (choice, answer) {
        (ToolChoice::Auto, Some(Grammar::Lark(_) | Grammar::Regex(_))) => Err(Error::InvalidInput(
            "a grammar or regex response format cannot be combined with tool choice auto; \
                 give the answer a JSON schema, or choose none"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// `messages` with the tools' examples after the leading system message (see
/// [`ToolExample`]).
fn with_examples(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
    let at = usize::from(messages.first().is_some_and(|m| m.role == "system"));
    let mut out = messages[..at].to_vec();
    for tool in tools {
        for example in &tool.examples {
            out.push(Message::user(example.request.clone()));
            out.push(Message::calls(vec![ToolCall {
                name: tool.name.clone(),
                arguments: example.arguments.clone(),
            }]));
        }
    }
    out.extend_from_slice(&messages[at..]);
    out
}

/// `text` as a Lark string literal (`""` for none).
fn lark_literal(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        Value::String(text.to_string()).to_string()
    }
}

/// The conversation rewritten for [`ToolFormat::SystemPrompt`]: the tool block first in the
/// system message (one is added when there is none), assistant calls as the JSON the model is
/// asked to write, tool results as user turns.
fn with_tools(messages: &[Message], tools: &[ToolSpec]) -> Vec<Message> {
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
        } else if !m.tool_calls.is_empty() {
            let calls: Vec<String> = m.tool_calls.iter().map(call_json).collect();
            let text = if m.content.is_empty() {
                calls.join("\n")
            } else {
                format!("{}\n{}", m.content, calls.join("\n"))
            };
            Message::assistant(text)
        } else {
            m.clone()
        });
    }
    out
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

/// A text answer: anything that does not start with `{` or white space (so never a call).
const TEXT: &str = "TEXT: /[^{\\s][\\s\\S]*/\n";
/// A text answer where calls open with a tag: anything that does not start with `<` or white
/// space.
const TEXT_NOT_TAG: &str = "TEXT: /[^<\\s][\\s\\S]*/\n";

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

/// `schema` with the whitespace options `Grammar::JsonSchema` applies unless it sets its own
/// (a `%json` block inside a Lark grammar gets llguidance's defaults otherwise).
fn with_whitespace_options(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
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
                examples: Vec::new(),
            },
            ToolSpec {
                name: "search_faq".into(),
                description: "Search the FAQ".into(),
                parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
                examples: Vec::new(),
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
            Message::calls(vec![call.clone()]),
            Message::tool_result("call_1", "{\"price\": 3}"),
        ];
        let out = with_tools(&messages, &tools());
        assert_eq!(out.len(), 4);
        assert!(out[0].content.starts_with("You can call these tools:\n{"));
        assert!(out[0].content.ends_with("plain text.\n\nBe brief."));
        assert_eq!(out[2].content, call_json(&call));
        assert_eq!(
            ToolFormat::SystemPrompt.parse(&out[2].content, &tools()),
            ToolAnswer::Calls(vec![call])
        );
        assert_eq!(
            (out[3].role.as_str(), out[3].content.as_str()),
            ("user", "Tool result:\n{\"price\": 3}")
        );
        // Without a system message one is added; the block is the same for the same tools.
        let bare = with_tools(&messages[1..2], &tools());
        assert!(out[0].content.starts_with(&bare[0].content));
    }

    #[test]
    fn examples_come_after_the_system_prompt_as_turns() {
        let mut tools = tools();
        tools[1].examples = vec![ToolExample {
            request: "Where is the refund policy?".into(),
            arguments: json!({"query": "refund policy"}),
        }];
        let messages = [Message::system("Be brief."), Message::user("ACME?")];
        let out = with_tools(&with_examples(&messages, &tools), &tools);
        let turns: Vec<(&str, &str)> = out
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(turns.len(), 4, "{turns:?}");
        assert!(turns[0].1.ends_with("Be brief."));
        assert_eq!(turns[1], ("user", "Where is the refund policy?"));
        assert_eq!(
            turns[2],
            (
                "assistant",
                r#"{"name":"search_faq","arguments":{"query":"refund policy"}}"#
            )
        );
        assert_eq!(turns[3], ("user", "ACME?"));
        tools[1].examples[0].arguments = json!("refund");
        let err = validate(&tools, &ToolChoice::Auto).unwrap_err().to_string();
        assert!(err.contains("tools[1] (search_faq): examples[0]"), "{err}");
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
        let call = ToolAnswer::Calls(vec![ToolCall {
            name: "search_faq".into(),
            arguments: json!({"query": "refund"}),
        }]);
        let plain = ToolFormat::SystemPrompt;
        assert_eq!(
            plain.parse(
                r#"{"name": "search_faq", "arguments": {"query": "refund"}}"#,
                &tools()
            ),
            call
        );
        assert_eq!(
            plain.parse("Hello there", &tools()),
            ToolAnswer::Text("Hello there".into())
        );
        // A JSON answer (a response_format) that is not a call of an offered tool is text.
        for text in [
            r#"{"name": "Ada", "age": 3}"#,
            r#"{"name": "nope", "arguments": {}}"#,
        ] {
            assert_eq!(plain.parse(text, &tools()), ToolAnswer::Text(text.into()));
        }
        let hermes = ToolFormat::Hermes;
        assert_eq!(
            hermes.parse(
                "<tool_call>\n{\"name\": \"search_faq\", \"arguments\": {\"query\": \"refund\"}}\n</tool_call>",
                &tools()
            ),
            call
        );
        assert_eq!(
            ToolFormat::Llama3.parse(
                r#"{"name": "search_faq", "parameters": {"query": "refund"}}"#,
                &tools()
            ),
            call
        );
    }

    #[test]
    fn formats_are_read_off_the_template() {
        let t = |source: &str| ChatTemplate::new(source, "", "").unwrap();
        assert_eq!(
            ToolFormat::of(&ChatTemplate::chatml("", "")),
            ToolFormat::SystemPrompt
        );
        assert_eq!(
            ToolFormat::of(&t(crate::testing::HERMES_TEMPLATE)),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::of(&t(
                "{% if tools %}{{ '<|start_header_id|>' }}{{ '{\"name\": x, \"parameters\": y}' }}{% endif %}"
            )),
            ToolFormat::Llama3
        );
        // Tools in a format this module does not know: the fallback.
        assert_eq!(
            ToolFormat::of(&t("{% if tools %}[TOOL_CALLS]{% endif %}")),
            ToolFormat::SystemPrompt
        );
    }

    #[test]
    fn grammars_compile_for_every_format_and_choice() {
        let answer = Grammar::JsonSchema(
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        );
        for format in [
            ToolFormat::SystemPrompt,
            ToolFormat::Hermes,
            ToolFormat::Llama3,
        ] {
            for choice in [
                ToolChoice::Auto,
                ToolChoice::Required,
                ToolChoice::None,
                ToolChoice::Function("search_faq".into()),
            ] {
                for answer in [None, Some(&answer)] {
                    let g = format.grammar(&tools(), &choice, answer).unwrap();
                    g.check()
                        .unwrap_or_else(|e| panic!("{format:?} {choice:?}: {e}"));
                }
            }
        }
        let lark = Grammar::Lark("start: \"yes\" | \"no\"".into());
        let err = ToolFormat::SystemPrompt
            .grammar(&tools(), &ToolChoice::Auto, Some(&lark))
            .unwrap_err();
        assert!(err.to_string().contains("tool choice auto"), "{err}");
        assert_eq!(
            ToolFormat::SystemPrompt
                .grammar(&tools(), &ToolChoice::None, Some(&lark))
                .unwrap(),
            lark
        );
    }
}
