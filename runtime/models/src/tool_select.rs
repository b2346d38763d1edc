//! Tool calls a small model gets right: choose the tool first, then write its arguments from
//! what the user said. A grammar alone guarantees the shape of a call, not its sense: a 135M
//! model under one grammar over all tools mostly picks a favourite tool and invents arguments.
//!
//! A [`ToolRequest`] runs in three steps (all on the session, its prompt cache reusing the
//! shared prefix of the prompts):
//!
//! 1. **Feasibility and spans** ([`narrow`]): an argument that names something in the
//!    conversation — a number, an id (a token with a digit: `SUP-1042`), a ticker symbol (an
//!    upper-case word), a search query or topic (up to six consecutive words) by its schema's
//!    type, name and description — is constrained to the spans of that kind in the last user
//!    message (`enum`). A tool with a required argument of that kind and no such span is not
//!    a candidate: an id the user never wrote is never right. Other free text (a reason, a
//!    message) stays free, bounded to 80 characters unless its schema bounds it.
//! 2. **Choice** (under `required`, with several candidates): each candidate's name is scored
//!    by its log-probability after the prompt and `{"name": "`, calibrated by the same score
//!    with the user's message emptied (which removes the model's a-priori favourite), plus
//!    (the default, [`Technique::Routed`]) [`ROUTE_WEIGHT`] × the candidate's embedding
//!    similarity to the request when the caller gives one (the runtime does when an embedding
//!    model is configured); the best one wins.
//! 3. **Arguments**: generation under the chosen tool's narrowed schema
//!    ([`ToolFormat::grammar`] with that one tool), so the call is valid by construction.
//!
//! Under `auto` the answer may be text: one token generated under the grammar that allows
//! text or a call says which (a call opens with `{` or `<`, text never does); a call then
//! goes through steps 2 and 3 as under `required`, text is generated under the text-only
//! grammar; a call that repeats one whose result the conversation already holds is dropped
//! for a text answer (so an agent loop ends). With the JSON of a `response_format` as the
//! text answer both open with `{`, and one generation under [`ToolFormat::grammar`] decides
//! (the answer, or a call of a narrowed tool). A named function skips step 2.
//!
//! Prompts, calls and the scored prefix follow the model's [`ToolFormat`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::constraint::Grammar;
use crate::error::Result;
use crate::message::Message;
use crate::message::ToolCall;
use crate::sampler::SamplingParams;
use crate::session::{CancelToken, Completion, Session};
use crate::tool_call::{self, ToolAnswer, ToolChoice, ToolFormat, ToolSpec};

/// How much of the module's machinery a [`ToolRequest`] uses: benchmarks compare them, the
/// default is all of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    /// One grammar over every tool and its schema as given: what a bare server does.
    Grammar,
    /// Step 1: arguments constrained to the user's spans, infeasible tools dropped; one
    /// grammar over the candidates.
    Spans,
    /// Steps 1 to 3: the tool chosen by calibrated name scores, then its arguments.
    Scores,
    /// [`Technique::Scores`] with each candidate's calibrated score raised by
    /// [`ROUTE_WEIGHT`] × its [`ToolRequest::similarity`] to the request (an embedding
    /// model's cosine similarity between the request and the tool's name and description,
    /// given by the caller); without similarities it is `Scores`. The default.
    #[default]
    Routed,
}

/// How much [`Technique::Routed`] weighs a tool's similarity to the request (a cosine, one
/// at most) against its calibrated name score (a log-probability difference). Chosen on the
/// dev split of `benches/agent/tasks.json`: of 10, 20 and 40, 20 and 40 tie there.
pub const ROUTE_WEIGHT: f32 = 20.0;

/// A chat that may call tools, for [`crate::Prompt::Tools`].
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRequest {
    /// The conversation (past calls as assistant messages' `tool_calls`, their results as
    /// `tool` messages).
    pub messages: Vec<Message>,
    /// The tools offered (validated with [`tool_call::validate`]).
    pub tools: Vec<ToolSpec>,
    /// How they may be used.
    pub choice: ToolChoice,
    /// Which techniques choose the call.
    pub technique: Technique,
    /// The constraint on a text answer (a `response_format`), under `auto` a JSON schema.
    pub answer: Option<Grammar>,
    /// For [`Technique::Routed`]: each tool's similarity to the request, in `tools`' order.
    pub similarity: Option<Vec<f32>>,
}

impl ToolRequest {
    /// The last user message: what the spans come from and what routing compares the tools
    /// with.
    pub fn user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.content.as_str())
    }
}

/// Runs `request` on `session` (see the module docs). The completion's text is the answer as
/// generated; its `tool_calls` the call it made, if it made one and ended.
pub(crate) fn generate(
    session: &mut Session,
    request: &ToolRequest,
    params: &SamplingParams,
    cancel: &CancelToken,
    on_chunk: impl FnMut(&str),
) -> Result<Completion> {
    tool_call::validate(&request.tools, &request.choice)?;
    let user = request.user_text();
    let narrowed: Vec<Option<ToolSpec>> = match request.technique {
        Technique::Grammar => request.tools.iter().cloned().map(Some).collect(),
        Technique::Spans | Technique::Scores | Technique::Routed => {
            request.tools.iter().map(|t| narrow(t, user)).collect()
        }
    };
    let feasible: Vec<ToolSpec> = narrowed.iter().flatten().cloned().collect();
    let model = session.model().clone();
    let format = ToolFormat::of(model.template());
    // The prompt lists every tool as offered, so it stays the same (and cached) whatever
    // this request's spans are.
    let prompt = format.prompt(&model, &request.messages, &request.tools)?;
    let scored = matches!(request.technique, Technique::Scores | Technique::Routed);
    let candidates = if feasible.is_empty() {
        request.tools.clone()
    } else {
        feasible
    };
    let (offered, choice) = match &request.choice {
        ToolChoice::Function(name) => {
            let i = request.tools.iter().position(|t| &t.name == name);
            let tool = i
                .and_then(|i| narrowed[i].clone())
                .unwrap_or_else(|| request.tools[i.unwrap_or(0)].clone());
            (vec![tool], request.choice.clone())
        }
        ToolChoice::None => (Vec::new(), ToolChoice::None),
        // Text or a call: the answer's first token says which (a call opens with `{` or
        // `<`, text never does); a call is then chosen as under `required`. With a JSON
        // `response_format` both open with `{`: one generation decides.
        ToolChoice::Auto if scored && request.answer.is_none() => {
            if opens_call(session, format, &prompt, &candidates, params, cancel)? {
                let tool = pick(session, format, request, &prompt, candidates, cancel)?;
                let name = tool.name.clone();
                (vec![tool], ToolChoice::Function(name))
            } else {
                (Vec::new(), ToolChoice::None)
            }
        }
        ToolChoice::Auto => (candidates, ToolChoice::Auto),
        ToolChoice::Required if scored => {
            let tool = pick(session, format, request, &prompt, candidates, cancel)?;
            let name = tool.name.clone();
            (vec![tool], ToolChoice::Function(name))
        }
        ToolChoice::Required => (candidates, ToolChoice::Required),
    };
    let constrained = SamplingParams {
        grammar: Some(format.grammar(&offered, &choice, request.answer.as_ref())?),
        ..params.clone()
    };
    let mut on_chunk = on_chunk;
    // A call `auto` chose is written before it is streamed: one that repeats a call whose
    // result the conversation already holds adds nothing (a small model after a tool result
    // tends to call again), and the answer is text instead, so an agent loop ends.
    let held = request.choice == ToolChoice::Auto && matches!(choice, ToolChoice::Function(_));
    let mut completion = if held {
        session.generate(&prompt, &constrained, cancel, |_| {})?
    } else {
        session.generate(&prompt, &constrained, cancel, &mut on_chunk)?
    };
    if completion.finish_reason == crate::session::FinishReason::Stop
        && let ToolAnswer::Calls(calls) = format.parse(&completion.text, &offered)
    {
        completion.tool_calls = calls;
    }
    if held {
        if !completion.tool_calls.is_empty() && repeats(&request.messages, &completion.tool_calls) {
            tracing::debug!("auto: the call repeats one already answered; answering text");
            let text = SamplingParams {
                grammar: Some(format.grammar(&[], &ToolChoice::None, None)?),
                ..params.clone()
            };
            return session.generate(&prompt, &text, cancel, on_chunk);
        }
        if !completion.text.is_empty() {
            on_chunk(&completion.text);
        }
    }
    Ok(completion)
}

/// Whether every one of `calls` was made before in `messages` and its result is there.
fn repeats(messages: &[Message], calls: &[ToolCall]) -> bool {
    let answered = |call: &ToolCall| {
        messages.iter().enumerate().any(|(i, m)| {
            m.tool_calls.contains(call) && messages[i + 1..].iter().any(|r| r.role == "tool")
        })
    };
    calls.iter().all(answered)
}

/// Whether the answer under `auto` opens a call: one token generated under the grammar that
/// allows text or a call of `candidates` (not streamed; the prompt stays cached for what
/// follows).
fn opens_call(
    session: &mut Session,
    format: ToolFormat,
    prompt: &[u32],
    candidates: &[ToolSpec],
    params: &SamplingParams,
    cancel: &CancelToken,
) -> Result<bool> {
    let probe = SamplingParams {
        grammar: Some(format.grammar(candidates, &ToolChoice::Auto, None)?),
        max_tokens: 1,
        ..params.clone()
    };
    let first = session.generate(prompt, &probe, cancel, |_| {})?;
    let opener = format.call_prefix().chars().next();
    Ok(first.text.chars().next() == opener)
}

/// The candidate to call: the only one, or the one [`choose`] scores best.
fn pick(
    session: &mut Session,
    format: ToolFormat,
    request: &ToolRequest,
    prompt: &[u32],
    mut candidates: Vec<ToolSpec>,
    cancel: &CancelToken,
) -> Result<ToolSpec> {
    let best = if candidates.len() == 1 {
        0
    } else {
        choose(session, format, request, prompt, &candidates, cancel)?
    };
    Ok(candidates.swap_remove(best))
}

/// The text a tool is routed by: its name in words and its description.
pub fn route_text(tool: &ToolSpec) -> String {
    format!(
        "{}: {}",
        tool.name.replace(['_', '.', '-'], " "),
        tool.description
    )
}

/// The index of the candidate whose name scores best after the prompt, calibrated by its score
/// after the same prompt with the user's last message emptied.
fn choose(
    session: &mut Session,
    format: ToolFormat,
    request: &ToolRequest,
    prompt: &[u32],
    candidates: &[ToolSpec],
    cancel: &CancelToken,
) -> Result<usize> {
    let model = session.model().clone();
    let tokenizer = model.tokenizer();
    let prefix = tokenizer.encode(&format.call_prefix(), false)?;
    let names = candidates
        .iter()
        .map(|t| tokenizer.encode(&format!("{}\"", t.name), false))
        .collect::<Result<Vec<_>>>()?;
    let mut empty = request.messages.clone();
    if let Some(m) = empty.iter_mut().rev().find(|m| m.role == "user") {
        m.content.clear();
    }
    let empty = format.prompt(&model, &empty, &request.tools)?;
    // The empty prompt first: the real one is scored next and then generated from, its whole
    // prefix cached.
    let prior = session.score(&[empty, prefix.clone()].concat(), &names, cancel)?;
    let scored = session.score(&[prompt, &prefix[..]].concat(), &names, cancel)?;
    let mut best = 0;
    let mut best_score = f32::NEG_INFINITY;
    for (i, (s, p)) in scored.iter().zip(&prior).enumerate() {
        let mut calibrated = s - p;
        if let (Technique::Routed, Some(similarity)) = (&request.technique, &request.similarity)
            && let Some(j) = request
                .tools
                .iter()
                .position(|t| t.name == candidates[i].name)
        {
            calibrated += ROUTE_WEIGHT * similarity[j];
        }
        tracing::debug!(tool = %candidates[i].name, score = s, prior = p, calibrated, "tool score");
        if calibrated > best_score {
            best = i;
            best_score = calibrated;
        }
    }
    Ok(best)
}

/// What kind of span an argument takes from the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Span {
    /// A number written in the text.
    Number,
    /// A token with a digit in it (`SUP-1042`, `A17`, `v2.3`).
    Id,
    /// An upper-case word of 2 to 5 letters (`AAPL`, `IBM`).
    Symbol,
    /// One to [`MAX_PHRASE_WORDS`] consecutive words (a search query, a topic).
    Phrase,
}

/// Words a phrase does not start or end with: English function words and the requests'
/// verbs around a query ("find", "search", "look up").
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "an",
    "and",
    "any",
    "are",
    "at",
    "be",
    "can",
    "could",
    "do",
    "does",
    "find",
    "for",
    "from",
    "have",
    "help",
    "how",
    "i",
    "i'd",
    "i'm",
    "in",
    "information",
    "is",
    "it",
    "like",
    "look",
    "me",
    "my",
    "of",
    "on",
    "or",
    "please",
    "search",
    "show",
    "tell",
    "that",
    "the",
    "there",
    "this",
    "to",
    "up",
    "want",
    "what",
    "when",
    "where",
    "which",
    "who",
    "why",
    "with",
    "would",
    "you",
    "your",
];

/// The longest phrase a [`Span::Phrase`] argument takes from the conversation.
const MAX_PHRASE_WORDS: usize = 6;
/// The length free-text arguments are held to when their schema sets none: a small model left
/// free writes URLs and timestamps until the token budget runs out.
const FREE_TEXT_MAX_CHARS: u64 = 80;

/// The kind of span a property takes, from its schema: numbers and integers; strings whose
/// name or description says id, number, code, ticker or symbol. `None`: free (or already
/// constrained by `enum`, `const`, `pattern`, or a string `format`; a number's `format` —
/// `uint32`, `int64`, as schemars writes them — only says its width).
fn span_kind(name: &str, schema: &Value) -> Option<Span> {
    let Value::Object(s) = schema else {
        return None;
    };
    let numeric = matches!(
        s.get("type").and_then(Value::as_str),
        Some("integer" | "number")
    );
    if ["enum", "const", "pattern"]
        .iter()
        .any(|k| s.contains_key(*k))
        || (s.contains_key("format") && !numeric)
    {
        return None;
    }
    let description = s
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_lowercase();
    let name = name.to_lowercase();
    let says = |words: &[&str]| {
        words.iter().any(|w| {
            name.split(|c: char| !c.is_alphanumeric())
                .any(|part| part == *w)
                || description
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|part| part == *w)
        })
    };
    match s.get("type").and_then(Value::as_str) {
        Some("integer" | "number") => Some(Span::Number),
        Some("string") if says(&["ticker", "symbol"]) => Some(Span::Symbol),
        Some("string") if says(&["id", "identifier", "number", "code"]) => Some(Span::Id),
        Some("string") if says(&["query", "search", "keyword", "keywords", "topic", "term"]) => {
            Some(Span::Phrase)
        }
        _ => None,
    }
}

/// The spans of `kind` in `text`, in order, without repeats.
fn spans(kind: Span, text: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ",;:!?()\"`".contains(c))
        .map(|w| w.trim_end_matches('.'))
        .filter(|w| !w.is_empty())
        .collect();
    if kind == Span::Phrase {
        for n in 1..=MAX_PHRASE_WORDS.min(words.len()) {
            for phrase in words.windows(n) {
                let edge = |w: &str| STOPWORDS.contains(&w.to_lowercase().as_str());
                if edge(phrase[0]) || edge(phrase[n - 1]) {
                    continue;
                }
                let value = json!(phrase.join(" "));
                if !out.contains(&value) {
                    out.push(value);
                }
            }
        }
        return out;
    }
    for word in words {
        let value = match kind {
            Span::Number => {
                let digits = word.trim_start_matches('#');
                match digits.parse::<i64>() {
                    Ok(n) => json!(n),
                    Err(_) => match digits.parse::<f64>() {
                        Ok(x) if x.is_finite() && digits.contains('.') => json!(x),
                        _ => continue,
                    },
                }
            }
            Span::Id if word.chars().any(|c| c.is_ascii_digit()) => json!(word),
            Span::Symbol
                if (2..=5).contains(&word.len())
                    && word.chars().all(|c| c.is_ascii_uppercase()) =>
            {
                json!(word)
            }
            Span::Id | Span::Symbol | Span::Phrase => continue,
        };
        if !out.contains(&value) {
            out.push(value);
        }
    }
    out
}

/// Whether `value` keeps the bounds of `schema` (`minLength`/`maxLength` of a string,
/// `minimum`/`maximum` of a number): the `enum` of spans replaces the type, not the bounds.
fn within_bounds(schema: &Value, value: &Value) -> bool {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let (low, high) = match value {
        Value::String(s) => {
            let n = s.chars().count() as f64;
            (
                bound("minLength").is_none_or(|b| n >= b),
                bound("maxLength").is_none_or(|b| n <= b),
            )
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            (
                bound("minimum").is_none_or(|b| x >= b),
                bound("maximum").is_none_or(|b| x <= b),
            )
        }
        _ => (true, true),
    };
    low && high
}

/// A free-text string schema with a length bound ([`FREE_TEXT_MAX_CHARS`] unless it sets one);
/// other schemas as they are.
fn bounded(schema: &Value) -> Value {
    match schema {
        Value::Object(s)
            if s.get("type").and_then(Value::as_str) == Some("string")
                && !["enum", "const", "pattern", "format", "maxLength"]
                    .iter()
                    .any(|k| s.contains_key(*k)) =>
        {
            let mut s = s.clone();
            s.insert("maxLength".into(), json!(FREE_TEXT_MAX_CHARS));
            Value::Object(s)
        }
        other => other.clone(),
    }
}

/// `tool` with each argument that names something in `text` constrained to its spans there;
/// `None` when a required one has no span (see the module docs).
pub fn narrow(tool: &ToolSpec, text: &str) -> Option<ToolSpec> {
    let Value::Object(schema) = &tool.parameters else {
        return Some(tool.clone());
    };
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return Some(tool.clone());
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut narrowed = Map::new();
    for (name, property) in properties {
        let Some(kind) = span_kind(name, property) else {
            narrowed.insert(name.clone(), bounded(property));
            continue;
        };
        let found: Vec<Value> = spans(kind, text)
            .into_iter()
            .filter(|v| within_bounds(property, v))
            .collect();
        if found.is_empty() {
            if required.contains(&name.as_str()) {
                return None;
            }
            narrowed.insert(name.clone(), property.clone());
            continue;
        }
        let mut property = property.clone();
        if let Value::Object(p) = &mut property {
            // The spans say it all (and llguidance knows no width formats such as `uint32`).
            p.remove("type");
            p.remove("format");
            p.insert("enum".into(), Value::Array(found));
        }
        narrowed.insert(name.clone(), property);
    }
    let mut schema = schema.clone();
    schema.insert("properties".into(), Value::Object(narrowed));
    Some(ToolSpec {
        parameters: Value::Object(schema),
        ..tool.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LoadOptions, Model};
    use crate::testing::{HERMES_TEMPLATE, LLAMA3_TEMPLATE, TinyModel};

    #[test]
    fn a_call_repeats_only_one_already_answered() {
        let call = ToolCall {
            name: "get_price".into(),
            arguments: json!({"ticker": "ACME"}),
        };
        let other = ToolCall {
            arguments: json!({"ticker": "IBM"}),
            ..call.clone()
        };
        let asked = vec![Message::user("ACME?"), Message::calls(vec![call.clone()])];
        assert!(
            !repeats(&asked, std::slice::from_ref(&call)),
            "no result yet"
        );
        let mut answered = asked.clone();
        answered.push(Message::tool_result("call_1", "3"));
        assert!(repeats(&answered, std::slice::from_ref(&call)));
        assert!(!repeats(&answered, &[other]));
    }

    /// Sampling at temperature 1 over the whole vocabulary, seeded.
    fn sampled(seed: u64, max_tokens: usize) -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: Some(seed),
            ..SamplingParams::greedy(max_tokens)
        }
    }

    /// A tiny model with `template` and room for a tool prompt; the dir lives with the guard.
    fn tiny_with_template(template: &str) -> (Model, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        TinyModel {
            chat_template: Some(template.into()),
            context_length: 2048,
            ..TinyModel::default()
        }
        .write(&path)
        .unwrap();
        let model = Model::load_with(&path, &LoadOptions::default()).unwrap();
        (model, dir)
    }

    /// A tiny model whose template takes tools (Hermes-style, as Qwen2.5's): the prompt lists
    /// them the template's way, and at temperature 1 every answer is a call in the template's
    /// `<tool_call>` format (or, under `auto`, text or the `response_format`'s JSON).
    #[test]
    fn a_template_with_tools_gets_its_own_call_format() {
        let (model, _dir) = tiny_with_template(HERMES_TEMPLATE);
        assert_eq!(ToolFormat::of(model.template()), ToolFormat::Hermes);
        let tools = vec![
            tool(
                "get_price",
                "ticker",
                json!({"type": "string", "description": "Ticker symbol"}),
            ),
            tool(
                "search_faq",
                "query",
                json!({"type": "string", "description": "What to search for"}),
            ),
        ];
        let messages = vec![Message::user("Price of ACME, or the refund policy?")];
        let prompt = ToolFormat::Hermes
            .prompt(&model, &messages, &tools)
            .unwrap();
        let text = model.tokenizer().decode(&prompt);
        assert!(
            text.contains(
                "<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_price\""
            ),
            "{text}"
        );
        let answer = Grammar::JsonSchema(json!({
            "type": "object",
            "properties": {"reply": {"enum": ["yes", "no"]}},
            "required": ["reply"],
        }));
        let mut session = model.session();
        let mut calls = 0;
        for seed in 0..6 {
            for (choice, answer) in [
                (ToolChoice::Required, None),
                (ToolChoice::Function("search_faq".into()), None),
                (ToolChoice::Auto, None),
                (ToolChoice::Auto, Some(answer.clone())),
            ] {
                let request = ToolRequest {
                    messages: messages.clone(),
                    tools: tools.clone(),
                    choice: choice.clone(),
                    technique: Technique::Scores,
                    answer: answer.clone(),
                    similarity: None,
                };
                let params = sampled(seed, 200);
                let c =
                    generate(&mut session, &request, &params, &CancelToken::new(), |_| {}).unwrap();
                let case = format!("seed {seed}, {choice:?}, {answer:?}: {:?}", c.text);
                if c.tool_calls.is_empty() {
                    assert_eq!(choice, ToolChoice::Auto, "{case}");
                    assert!(!c.text.starts_with('<'), "{case}");
                    if answer.is_some() && c.finish_reason == crate::FinishReason::Stop {
                        let v: Value = serde_json::from_str(&c.text).expect(&case);
                        assert!(
                            ["yes", "no"].contains(&v["reply"].as_str().unwrap()),
                            "{case}"
                        );
                    }
                    continue;
                }
                calls += 1;
                assert_eq!(c.finish_reason, crate::FinishReason::Stop, "{case}");
                assert!(c.text.starts_with("<tool_call>\n{\"name\": \""), "{case}");
                assert!(c.text.ends_with("}\n</tool_call>"), "{case}");
                let call = &c.tool_calls[0];
                match call.name.as_str() {
                    "get_price" => assert_eq!(call.arguments, json!({"ticker": "ACME"}), "{case}"),
                    "search_faq" => {
                        let q = call.arguments["query"].as_str().expect(&case);
                        assert!(messages[0].content.contains(q), "{case}");
                    }
                    other => panic!("{other}: {case}"),
                }
                if let ToolChoice::Function(name) = &choice {
                    assert_eq!(&call.name, name, "{case}");
                }
            }
        }
        assert!(
            calls >= 12,
            "required and named choices always call: {calls}"
        );
    }

    /// A Llama-3.x-style template: the tools in the first user turn, a call answered as
    /// `{"name": ..., "parameters": ...}`, the history rendered by the template.
    #[test]
    fn a_llama3_template_gets_name_and_parameters() {
        let (model, _dir) = tiny_with_template(LLAMA3_TEMPLATE);
        assert_eq!(ToolFormat::of(model.template()), ToolFormat::Llama3);
        let tools = vec![tool(
            "get_price",
            "ticker",
            json!({"type": "string", "description": "Ticker symbol"}),
        )];
        let history = vec![
            Message::user("Price of ACME?"),
            Message::calls(vec![crate::ToolCall {
                name: "get_price".into(),
                arguments: json!({"ticker": "ACME"}),
            }]),
            Message::tool_result("call_1", "{\"price\": 3}"),
            Message::user("And of IBM?"),
        ];
        let prompt = ToolFormat::Llama3.prompt(&model, &history, &tools).unwrap();
        let text = model.tokenizer().decode(&prompt);
        for part in [
            "\"parameters\": dictionary of argument name",
            "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"get_price\"",
            "Price of ACME?<|eot_id|>",
            "{\"name\": \"get_price\", \"parameters\": {\"ticker\": \"ACME\"}}<|eot_id|>",
            "<|start_header_id|>ipython<|end_header_id|>\n\n{\"price\": 3}<|eot_id|>",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        let mut session = model.session();
        for seed in 0..4 {
            let request = ToolRequest {
                messages: history.clone(),
                tools: tools.clone(),
                choice: ToolChoice::Required,
                technique: Technique::Routed,
                answer: None,
                similarity: None,
            };
            let params = sampled(seed, 120);
            let c = generate(&mut session, &request, &params, &CancelToken::new(), |_| {}).unwrap();
            assert_eq!(
                c.text, "{\"name\": \"get_price\", \"parameters\": {\"ticker\": \"IBM\"}}",
                "seed {seed}"
            );
            assert_eq!(c.tool_calls[0].arguments, json!({"ticker": "IBM"}));
        }
    }

    fn tool(name: &str, property: &str, schema: Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {property: schema}, "required": [property]}),
            examples: Vec::new(),
        }
    }

    #[test]
    fn arguments_come_from_the_users_words() {
        let ticket = tool(
            "lookup",
            "ticket_id",
            json!({"type": "string", "description": "Ticket id such as SUP-1"}),
        );
        let build = tool("log", "build", json!({"type": "integer"}));
        let price = tool("price", "ticker", json!({"type": "string"}));
        let faq = tool("faq", "query", json!({"type": "string"}));
        let text = "Is SUP-1042 about build #977 or 978? Ask IBM.";
        let enum_of = |t: &ToolSpec, p: &str| {
            narrow(t, text).unwrap().parameters["properties"][p]["enum"].clone()
        };
        assert_eq!(
            enum_of(&ticket, "ticket_id"),
            json!(["SUP-1042", "#977", "978"])
        );
        assert_eq!(enum_of(&build, "build"), json!([977, 978]));
        assert_eq!(enum_of(&price, "ticker"), json!(["IBM"]));
        let query = enum_of(&faq, "query");
        assert!(
            query
                .as_array()
                .unwrap()
                .contains(&json!("build #977 or 978")),
            "{query}"
        );
        let note = tool("note", "text", json!({"type": "string"}));
        let free = narrow(&note, text).unwrap();
        assert_eq!(
            free.parameters["properties"]["text"],
            json!({"type": "string", "maxLength": 80}),
            "free text stays free, bounded"
        );
        // A required id the text does not have: not a candidate.
        assert!(narrow(&ticket, "How do I reset my password?").is_none());
        assert!(narrow(&price, "What is the price of this?").is_none());
        assert!(narrow(&faq, "anything").is_some());
        // The schema's bounds still hold over the spans.
        let short = tool("faq", "query", json!({"type": "string", "maxLength": 4}));
        assert_eq!(
            narrow(&short, "reset password now").unwrap().parameters["properties"]["query"]["enum"],
            json!(["now"])
        );
        let small = tool("log", "build", json!({"type": "integer", "maximum": 100}));
        assert!(
            narrow(&small, text).is_none(),
            "977 and 978 are out of bounds"
        );
        // A width format (schemars' u32) still takes the numbers written, and only those.
        let id = tool(
            "get",
            "id",
            json!({"type": "integer", "format": "uint32", "minimum": 0}),
        );
        assert_eq!(enum_of(&id, "id"), json!([977, 978]));
        assert!(
            narrow(&id, text).unwrap().parameters["properties"]["id"]
                .get("format")
                .is_none()
        );
        assert!(narrow(&id, "How do I reset my password?").is_none());
    }
}
