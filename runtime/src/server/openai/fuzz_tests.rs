//! Property tests of the OpenAI-compatible request bodies with hostile input: a body of any
//! shape deserializes or is refused, and a request that deserializes is planned or refused
//! with a 4xx naming the problem — never a panic, never a 5xx (the client's input cannot be
//! the server's fault). Tools, schemas and messages get arbitrary JSON in every field.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::wire::{ChatRequest, CompletionRequest};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(1), Just(-1), Just(2), Just(1 << 40)].prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has finite numbers", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("function"),
            Just("text"),
            Just("json_object"),
            Just("json_schema"),
            Just("object"),
            Just("string"),
            Just("auto"),
            Just("required"),
            Just("none"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("role"),
        Just("content"),
        Just("type"),
        Just("text"),
        Just("name"),
        Just("function"),
        Just("parameters"),
        Just("arguments"),
        Just("tool_calls"),
        Just("tool_call_id"),
        Just("id"),
        Just("properties"),
        Just("required"),
        Just("enum"),
        Just("items"),
        Just("schema"),
        Just("json_schema"),
        Just("$ref"),
        Just("anyOf"),
        Just("x"),
    ]
    .prop_map(str::to_string);
    leaf().prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body with the request's top-level fields, each of any shape.
fn body(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(fields), any_json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "top_k",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "tool_selection",
    "user",
];

const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "stop",
    "n",
    "stream",
    "echo",
    "best_of",
    "suffix",
    "logprobs",
    "seed",
];

/// Messages and tools of plausible shape with arbitrary insides: deeper into `plan` than a
/// random body gets.
fn plausible_chat() -> impl Strategy<Value = Value> {
    let message = (
        leaf(),
        any_json(),
        prop::option::of(any_json()),
        prop::option::of(leaf()),
    )
        .prop_map(|(role, content, calls, id)| {
            let mut m = json!({ "role": role, "content": content });
            if let Some(calls) = calls {
                m["tool_calls"] = calls;
            }
            if let Some(id) = id {
                m["tool_call_id"] = id;
            }
            m
        });
    let tool = (leaf(), any_json()).prop_map(|(name, parameters)| {
        json!({ "type": "function", "function": { "name": name, "parameters": parameters } })
    });
    (
        prop::collection::vec(message, 0..4),
        prop::option::of(prop::collection::vec(tool, 0..3)),
        prop::option::of(any_json()),
        prop::option::of(any_json()),
    )
        .prop_map(|(messages, tools, tool_choice, response_format)| {
            let mut body = json!({ "messages": messages });
            if let Some(tools) = tools {
                body["tools"] = json!(tools);
            }
            if let Some(choice) = tool_choice {
                body["tool_choice"] = choice;
            }
            if let Some(format) = response_format {
                body["response_format"] = format;
            }
            body
        })
}

fn check_chat(body: Value) -> Result<(), TestCaseError> {
    let Ok(req) = serde_json::from_value::<ChatRequest>(body) else {
        return Ok(());
    };
    if let Err(e) = req.sampling.overrides(req.max_completion_tokens) {
        prop_assert!(e.status().is_client_error(), "{:?}", e);
    }
    if let Err(e) = req.plan() {
        prop_assert!(e.status().is_client_error(), "{:?}", e);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chat_bodies_of_any_shape_are_planned_or_refused_as_the_clients_error(
        body in body(CHAT_FIELDS),
    ) {
        check_chat(body)?;
    }

    #[test]
    fn plausible_chats_with_hostile_insides_are_planned_or_refused(body in plausible_chat()) {
        check_chat(body)?;
    }

    #[test]
    fn completion_bodies_of_any_shape_are_planned_or_refused(body in body(COMPLETION_FIELDS)) {
        let Ok(req) = serde_json::from_value::<CompletionRequest>(body) else {
            return Ok(());
        };
        for outcome in [
            req.check_unsupported(),
            req.prompt().map(drop),
            req.sampling.overrides(None).map(drop),
        ] {
            if let Err(e) = outcome {
                prop_assert!(e.status().is_client_error(), "{:?}", e);
            }
        }
    }
}
