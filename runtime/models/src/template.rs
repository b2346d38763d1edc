//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`) rendered with
//! minijinja, the way `transformers` renders it.
//!
//! `transformers` compiles templates with `trim_blocks` and `lstrip_blocks`, exposes
//! `raise_exception`, and templates call Python string methods (`.strip()`, `.startswith()`);
//! minijinja-contrib's `pycompat` callback provides those. A model without a template gets
//! ChatML ([`CHATML`]), which is what SmolLM, Qwen and most small instruct models speak.
//!
//! Templates with tool support (Qwen2.5/Qwen3, Llama 3.x, Hermes) read `tools` and the
//! messages' `tool_calls` and `tool_call_id` in the shapes `transformers` passes them (OpenAI's:
//! `{"type": "function", "function": {...}}`, arguments as an object), and print JSON with
//! `tojson`; ours writes it as Python's `json.dumps` does (`", "` and `": "`, no HTML
//! escaping), not as minijinja's HTML-safe default, so the prompt is the one the model saw in
//! training.

use std::collections::BTreeMap;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::message::Message;
use crate::tokenizer::Tokenizer;

/// The fallback template for models whose GGUF carries none.
pub const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template plus the special-token strings templates refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    is_fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("is_fallback", &self.is_fallback)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the strings the template sees under those
    /// names (the text of the BOS/EOS tokens).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(template_error)?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            is_fallback: false,
        })
    }

    /// ChatML, for models that carry no template.
    pub fn chatml(bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        let mut t = Self::new(CHATML, bos_token, eos_token).expect("CHATML compiles");
        t.is_fallback = true;
        t
    }

    /// The template from `tokenizer.chat_template`, or ChatML when the key is missing.
    pub fn from_gguf(file: &GgufFile, tokenizer: &Tokenizer) -> Result<Self> {
        let text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_string()
        };
        let (bos, eos) = (text(tokenizer.bos()), text(tokenizer.eos()));
        match file.get_str("tokenizer.chat_template") {
            Some(source) => Self::new(source, bos, eos),
            None => Ok(Self::chatml(bos, eos)),
        }
    }

    /// Renders `messages`; with `add_generation_prompt` the output ends with the opening of an
    /// assistant turn, ready for generation.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders `messages` with `tools` (OpenAI-shaped tool definitions, for templates that
    /// read `tools`); see [`ChatTemplate::render`].
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let messages: Vec<Value> = messages.iter().map(message_value).collect();
        let tools = tools.map(|t| Value::from(minijinja::value::Serde(t)));
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        self.env
            .get_template(TEMPLATE_NAME)
            .and_then(|t| t.render(ctx))
            .map_err(template_error)
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }
}

/// A message as `transformers` hands it to a template: `tool_calls` in OpenAI's shape with the
/// arguments as an object, `tool_call_id` on tool results; absent keys stay undefined.
fn message_value(m: &Message) -> Value {
    let mut map = BTreeMap::new();
    map.insert("role", Value::from(m.role.as_str()));
    map.insert("content", Value::from(m.content.as_str()));
    if !m.tool_calls.is_empty() {
        let calls: Vec<Json> = m
            .tool_calls
            .iter()
            .map(|c| json!({"type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        map.insert("tool_calls", Value::from(minijinja::value::Serde(&calls)));
    }
    if let Some(id) = &m.tool_call_id {
        map.insert("tool_call_id", Value::from(id.as_str()));
    }
    Value::from(map)
}

/// `tojson` as `transformers` defines it (`json.dumps` with `ensure_ascii=False`): `", "`
/// between items, `": "` after keys, keys in their order, nothing escaped for HTML. An
/// `indent` argument pretty-prints as `json.dumps(indent=n)` does.
fn tojson(value: Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    // `indent` positional or by name (`tojson(indent=4)`, as Llama 3.x templates write it);
    // `transformers`' other parameters keep their defaults.
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(n) => Some(n),
        None => indent,
    };
    for key in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(key)?;
    }
    kwargs.assert_all_used()?;
    let json: Json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let text = match indent {
        Some(n) => {
            let indent = " ".repeat(n);
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&json, &mut ser).map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            String::from_utf8(out).unwrap_or_default()
        }
        None => python_json(&json),
    };
    Ok(Value::from_safe_string(text))
}

/// `json.dumps(value, ensure_ascii=False)`.
pub(crate) fn python_json(value: &Json) -> String {
    let mut out = String::new();
    write_python_json(value, &mut out);
    out
}

fn write_python_json(value: &Json, out: &mut String) {
    match value {
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(item, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn template_error(e: minijinja::Error) -> Error {
    // `{:#}` includes the template line and the cause chain.
    Error::Template(format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders_turns_and_generation_prompt() {
        let t = ChatTemplate::chatml("", "<|im_end|>");
        let out = t
            .render(&[Message::system("Be brief."), Message::user("Hi")], true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert!(t.is_fallback());
    }

    #[test]
    fn python_methods_tokens_and_block_trimming_work() {
        // A Llama-3-like template: bos_token, .strip(), raise_exception, trimmed blocks.
        let source = "{{ bos_token }}{% for m in messages %}
{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}
<{{ m['role'] }}>{{ m['content'].strip() }}{{ eos_token }}
{% endfor %}";
        let t = ChatTemplate::new(source, "<s>", "</s>").unwrap();
        let out = t
            .render(
                &[Message::user("  hello  "), Message::assistant("yo")],
                false,
            )
            .unwrap();
        assert_eq!(out, "<s><user>hello</s>\n<assistant>yo</s>\n");
        let err = t.render(&[Message::system("x")], false).unwrap_err();
        assert!(err.to_string().contains("bad role system"), "{err}");
    }

    #[test]
    fn tool_templates_get_tools_calls_and_results_as_transformers_passes_them() {
        use crate::message::ToolCall;
        let t = ChatTemplate::new(crate::testing::HERMES_TEMPLATE, "", "<|im_end|>").unwrap();
        let tools = [json!({"type": "function", "function": {
            "name": "get_price",
            "description": "Price <of> a ticker & more",
            "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}},
        }})];
        let messages = [
            Message::user("ACME?"),
            Message::calls(vec![ToolCall {
                name: "get_price".into(),
                arguments: json!({"ticker": "ACME", "n": [1, 2]}),
            }]),
            Message::tool_result("call_1", "{\"price\": 3}"),
        ];
        let out = t.render_with_tools(&messages, Some(&tools), true).unwrap();
        // Keys in their order, Python's separators, nothing escaped for HTML.
        let listed = r#"{"type": "function", "function": {"name": "get_price", "description": "Price <of> a ticker & more", "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}}}}"#;
        let expected = format!(
            "<|im_start|>system\nYou are tiny.\n\n# Tools\n\nYou may call one or more functions to assist \
             with the user query.\n\nYou are provided with function signatures within <tools></tools> \
             XML tags:\n<tools>\n{listed}\n</tools>\n\nFor each function call, return a json object \
             with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\nACME?<|im_end|>\n\
             <|im_start|>assistant\n<tool_call>\n{{\"name\": \"get_price\", \"arguments\": \
             {{\"ticker\": \"ACME\", \"n\": [1, 2]}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\n{{\"price\": 3}}\n</tool_response><|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(out, expected);
        // Without tools the same template renders a plain chat.
        let plain = t.render(&messages[..1], true).unwrap();
        assert_eq!(
            plain,
            "<|im_start|>system\nYou are tiny.<|im_end|>\n<|im_start|>user\nACME?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn syntax_errors_are_template_errors() {
        let err = ChatTemplate::new("{% for %}", "", "").unwrap_err();
        assert!(matches!(err, Error::Template(_)), "{err:?}");
    }
}
