//! Constrained decoding on the tiny model: random weights put no thumb on the scale, so at
//! temperature 1 every token the grammar allows gets drawn now and then. Whatever the seed,
//! the output obeys the grammar.

use serde_json::{Value, json};
use slmfn_models::testing::TinyModel;
use slmfn_models::{CancelToken, Error, FinishReason, Grammar, Model, SamplingParams};

use crate::{generate, tiny_model};

fn sampled(grammar: Grammar, seed: u64, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: Some(seed),
        grammar: Some(grammar),
        ..SamplingParams::greedy(max_tokens)
    }
}

fn prompt(model: &Model) -> Vec<u32> {
    model.encode_prompt("the cat is on the mat").unwrap()
}

#[test]
fn json_schema_is_obeyed_at_temperature_one() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "count": {"type": "integer", "minimum": 0, "maximum": 99},
            "tag": {"enum": ["red", "green", "blue"]},
        },
        "required": ["name", "count", "tag"],
        "additionalProperties": false,
    });
    let prompt = prompt(&model);
    let mut session = model.session();
    for seed in 0..20 {
        let params = sampled(Grammar::JsonSchema(schema.clone()), seed, 64);
        let (c, _) = generate(&mut session, &prompt, &params);
        assert_eq!(
            c.finish_reason,
            FinishReason::Stop,
            "seed {seed}: {:?}",
            c.text
        );
        let v: Value = serde_json::from_str(&c.text)
            .unwrap_or_else(|e| panic!("seed {seed}: {:?} is not JSON: {e}", c.text));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "count", "tag"], "seed {seed}: {}", c.text);
        assert!(
            v["name"].as_str().unwrap().chars().count() <= 6,
            "{}",
            c.text
        );
        assert!(v["count"].as_u64().unwrap() <= 99, "{}", c.text);
        assert!(["red", "green", "blue"].contains(&v["tag"].as_str().unwrap()));
        // Property names, separators and most of each enum value were forced, not sampled.
        assert!(c.usage.forced_tokens > 0, "seed {seed}");
        assert!(c.usage.forced_tokens < c.usage.completion_tokens);
    }
}

#[test]
fn any_json_and_lark_and_regex_are_obeyed() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let prompt = prompt(&model);
    let mut session = model.session();
    let lark = r#"
        start: greeting " " name "!"
        greeting: "hello" | "bye"
        name: /[a-z]{1,5}/
    "#;
    for seed in 0..20 {
        let (c, _) = generate(
            &mut session,
            &prompt,
            &sampled(Grammar::JsonSchema(json!({})), seed, 48),
        );
        if c.finish_reason == FinishReason::Stop {
            // JSON numbers have no range; serde_json's do (Python's `json` reads them as inf).
            if let Err(e) = serde_json::from_str::<Value>(&c.text) {
                assert!(
                    e.to_string().contains("number out of range"),
                    "seed {seed}: {:?}: {e}",
                    c.text
                );
            }
        } else {
            assert_eq!(c.finish_reason, FinishReason::Length);
        }

        let (c, _) = generate(
            &mut session,
            &prompt,
            &sampled(Grammar::Lark(lark.into()), seed, 32),
        );
        assert_eq!(c.finish_reason, FinishReason::Stop, "{:?}", c.text);
        let rest = c
            .text
            .strip_prefix("hello ")
            .or_else(|| c.text.strip_prefix("bye "))
            .unwrap_or_else(|| panic!("{:?}", c.text));
        let name = rest
            .strip_suffix('!')
            .unwrap_or_else(|| panic!("{:?}", c.text));
        assert!(
            (1..=5).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase()),
            "{:?}",
            c.text
        );

        let rx = Grammar::Regex("[a-c]{3}-[0-9]{2}".into());
        let (c, _) = generate(&mut session, &prompt, &sampled(rx, seed, 16));
        assert_eq!(c.finish_reason, FinishReason::Stop, "{:?}", c.text);
        let b = c.text.as_bytes();
        assert!(
            b.len() == 6
                && b[..3].iter().all(|x| (b'a'..=b'c').contains(x))
                && b[3] == b'-'
                && b[4..].iter().all(u8::is_ascii_digit),
            "{:?}",
            c.text
        );
    }
}

/// A grammar with one sentence is forced whole: no token is sampled, and the forced tokens
/// went through one forward pass with the prompt.
#[test]
fn forced_tokens_are_appended_without_sampling() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let schema = json!({
        "type": "object",
        "properties": {"status": {"const": "ok"}},
        "required": ["status"],
        "additionalProperties": false,
    });
    let (c, _) = generate(
        &mut model.session(),
        &prompt(&model),
        &sampled(Grammar::JsonSchema(schema), 1, 32),
    );
    assert_eq!(c.text, r#"{"status": "ok"}"#);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.usage.forced_tokens, c.usage.completion_tokens);
}

/// Greedy and seeded constrained sampling repeat themselves, with or without a cached prompt.
#[test]
fn constrained_sampling_is_deterministic() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let prompt = prompt(&model);
    let grammar = Grammar::Lark("start: /[a-z ]{4,20}/ \".\"".into());
    let greedy = SamplingParams {
        grammar: Some(grammar.clone()),
        ..SamplingParams::greedy(24)
    };
    let seeded = sampled(grammar, 42, 24);
    let mut session = model.session();
    for params in [greedy, seeded] {
        let (a, _) = generate(&mut model.session(), &prompt, &params);
        let (b, _) = generate(&mut session, &prompt, &params);
        let (c, _) = generate(&mut session, &prompt, &params);
        assert!(c.usage.cached_tokens > 0);
        assert_eq!((&a.text, &a.tokens), (&b.text, &b.tokens));
        assert_eq!((&a.text, &a.tokens), (&c.text, &c.tokens));
    }
}

/// A constraint that `max_tokens` cuts ends with `length`: the text is not valid JSON, and
/// says so through the finish reason.
#[test]
fn a_constraint_cut_by_max_tokens_reports_length() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let schema = json!({
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 30}},
        "required": ["text"],
    });
    let (c, _) = generate(
        &mut model.session(),
        &prompt(&model),
        &sampled(Grammar::JsonSchema(schema), 3, 6),
    );
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert_eq!(c.usage.completion_tokens, 6);
    assert!(
        serde_json::from_str::<Value>(&c.text).is_err(),
        "{:?}",
        c.text
    );
}

/// Stop strings, cancellation and context checks keep working under a grammar.
#[test]
fn stops_and_cancellation_work_under_a_grammar() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let prompt = prompt(&model);
    let grammar = Grammar::Regex("abc(d|e)fgh".into());
    let params = SamplingParams {
        stop: vec!["fg".into()],
        ..sampled(grammar.clone(), 5, 16)
    };
    let (c, _) = generate(&mut model.session(), &prompt, &params);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert!(c.text == "abcd" || c.text == "abce", "{:?}", c.text);

    let cancel = CancelToken::new();
    cancel.cancel();
    let c = model
        .session()
        .generate(&prompt, &sampled(grammar, 5, 16), &cancel, |_| {})
        .unwrap();
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
}

/// Bad grammars are refused before anything runs, with a message naming the problem; a
/// remote `$ref` is not fetched.
#[test]
fn invalid_grammars_are_refused_with_the_reason() {
    let (model, _dir, _) = tiny_model(&TinyModel::default());
    let prompt = prompt(&model);
    let cases = [
        (
            Grammar::JsonSchema(json!({"type": "frobnicate"})),
            "frobnicate",
        ),
        (
            Grammar::JsonSchema(json!(42)),
            "JSON schema must be an object",
        ),
        (
            Grammar::JsonSchema(json!({"$ref": "http://127.0.0.1:9/schema.json"})),
            "JSON schema",
        ),
        (
            Grammar::Lark("start: nothing_defined".into()),
            "Lark grammar",
        ),
        (Grammar::Regex("[a-".into()), "regex"),
    ];
    for (grammar, needle) in cases {
        let params = sampled(grammar.clone(), 1, 8);
        let mut chunks = 0;
        let err = model
            .session()
            .generate(&prompt, &params, &CancelToken::new(), |_| chunks += 1)
            .unwrap_err();
        let Error::InvalidInput(message) = &err else {
            panic!("{grammar:?}: {err:?}");
        };
        assert!(message.contains(needle), "{grammar:?}: {message}");
        assert_eq!(chunks, 0);
    }
}
