//! The OpenAI-compatible API (`/v1`) and `/metrics` of a real runtime process: error shapes,
//! SSE framing, auth and overload on a tiny model the test writes; the official `openai`
//! Python client and client-disconnect cancellation against the real SmolLM2. Embeddings:
//! `/v1/embeddings` and the WIT `embed` of an agent on a tiny BERT the test writes, and the
//! official client on the real all-MiniLM-L6-v2.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::support::{Options, Runtime, guests, real_embed_model, real_model};

const CHAT: &str = "/v1/chat/completions";

/// A runtime serving a freshly written tiny model as `tiny`.
fn tiny_runtime(options: Options) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    slmfn_models::testing::TinyModel::default()
        .write(&model)
        .unwrap();
    let mut extra = vec!["--model".to_string(), format!("tiny={}", model.display())];
    extra.extend(options.extra_args);
    let rt = Runtime::start(
        &dir.path().join("data"),
        Options {
            extra_args: extra,
            ..options
        },
    )
    .unwrap();
    (rt, dir)
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// POSTs JSON to `path`; returns the status, the `Retry-After` header and the body text.
fn post(rt: &Runtime, path: &str, body: &Value) -> (u16, Option<String>, String) {
    let mut req = client().post(format!("{}{path}", rt.url)).json(body);
    if let Some(t) = &rt.token {
        req = req.bearer_auth(t);
    }
    split(req.send().unwrap())
}

fn split(resp: Response) -> (u16, Option<String>, String) {
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, resp.text().unwrap())
}

fn post_json(rt: &Runtime, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, text) = post(rt, path, body);
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
    (status, value)
}

fn get(rt: &Runtime, path: &str) -> (u16, String, String) {
    let resp = client().get(format!("{}{path}", rt.url)).send().unwrap();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status().as_u16(), content_type, resp.text().unwrap())
}

/// Asserts OpenAI's error shape and returns the error object.
#[track_caller]
fn openai_error(body: &Value, code: &str) -> Value {
    let error = &body["error"];
    assert!(error.is_object(), "not OpenAI's error shape: {body}");
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "error lacks {key:?}: {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(error["code"], code, "{body}");
    error.clone()
}

/// Splits an SSE body into its `data:` payloads, checking the framing: every event is one
/// `data: ` line followed by a blank line.
#[track_caller]
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line: {body:?}"
    );
    body.trim_end_matches('\n')
        .split("\n\n")
        .map(|event| {
            let payload = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event is not a data line: {event:?}"));
            assert!(!payload.contains('\n'), "one line per event: {event:?}");
            payload.to_string()
        })
        .collect()
}

/// The value of one sample line of the metrics text, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn chat_and_completions_answer_whole_and_streamed_in_openai_shapes() {
    let (rt, _dir) = tiny_runtime(Options::default());

    let (s, _, models) = get(&rt, "/v1/models");
    assert_eq!(s, 200, "{models}");
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["device"], "cpu");
    assert_eq!(models["data"][0]["state"], "unloaded");
    let (s, _, one) = get(&rt, "/v1/models/tiny");
    assert_eq!(s, 200, "{one}");

    // A whole chat completion; `model` omitted means the runtime's default.
    let request = json!({
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
        "temperature": 0,
        "max_tokens": 12,
    });
    let (s, whole) = post_json(&rt, CHAT, &request);
    assert_eq!(s, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "tiny");
    assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &whole["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let text = choice["message"]["content"].as_str().unwrap().to_string();
    let usage = &whole["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    // The same request streamed: role chunk, content chunks, finish chunk, usage chunk, [DONE].
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = client()
        .post(format!("{}{CHAT}", rt.url))
        .json(&streamed)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let payloads = sse_payloads(&resp.text().unwrap());
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(joined, text, "greedy streaming must match the whole answer");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    // The same counts; the model's session kept the prompt, so all of it but the last token
    // was reused this time.
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    let mut cached = usage.clone();
    cached["prompt_tokens_details"]["cached_tokens"] = json!(prompt_tokens - 1);
    assert_eq!(usage_chunk["usage"], cached);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], choice["finish_reason"]);
    assert_eq!(finish["delta"], json!({}));
    // Without include_usage there is no usage chunk.
    streamed["stream_options"] = json!(null);
    let (s, _, body) = post(&rt, CHAT, &streamed);
    assert_eq!(s, 200);
    let payloads = sse_payloads(&body);
    let last: Value = serde_json::from_str(&payloads[payloads.len() - 2]).unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert!(last.get("usage").is_none(), "{last}");

    // Text completions, whole and streamed; a stop string as a plain string.
    let request = json!({"model": "tiny", "prompt": "hello world", "temperature": 0, "max_tokens": 10, "stop": "zzz"});
    let (s, whole) = post_json(&rt, "/v1/completions", &request);
    assert_eq!(s, 200, "{whole}");
    assert_eq!(whole["object"], "text_completion");
    assert!(whole["id"].as_str().unwrap().starts_with("cmpl-"));
    let text = whole["choices"][0]["text"].as_str().unwrap();
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (s, _, body) = post(&rt, "/v1/completions", &streamed);
    assert_eq!(s, 200, "{body}");
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let joined: String = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(joined, text);
    // Token ids as the prompt.
    let (s, body) = post_json(
        &rt,
        "/v1/completions",
        &json!({"prompt": [5, 6, 7], "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    // The state after use.
    let (_, _, models) = get(&rt, "/v1/models");
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["state"], "idle");
}

#[test]
fn errors_have_openai_shapes_and_statuses() {
    let (rt, _dir) = tiny_runtime(Options::default());
    let hello = json!([{"role": "user", "content": "hello"}]);

    // Unknown model: 404 model_not_found, whatever else is wrong with the request.
    let (s, body) = post_json(&rt, CHAT, &json!({"model": "gpt-4o", "messages": []}));
    assert_eq!(s, 404, "{body}");
    let e = openai_error(&body, "model_not_found");
    assert_eq!(e["param"], "model");
    assert_eq!(e["type"], "invalid_request_error");
    assert!(e["message"].as_str().unwrap().contains("gpt-4o"));
    let (s, _, _) = get(&rt, "/v1/models/gpt-4o");
    assert_eq!(s, 404);

    // Parameters we cannot honour are refused, not ignored.
    let refused = [
        (json!({"messages": hello, "n": 2}), "n"),
        (
            json!({"messages": hello, "presence_penalty": 0.5}),
            "presence_penalty",
        ),
        (json!({"messages": hello, "logprobs": true}), "logprobs"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages",
        ),
    ];
    for (request, param) in refused {
        let (s, body) = post_json(&rt, CHAT, &request);
        assert_eq!(s, 400, "{request}: {body}");
        let e = openai_error(&body, "unsupported_parameter");
        assert_eq!(e["param"], param, "{body}");
    }
    // Neutral values of unsupported knobs pass (clients send them by default).
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"messages": hello, "n": 1, "presence_penalty": 0, "frequency_penalty": 0,
                "response_format": {"type": "text"}, "max_tokens": 2, "user": "u1"}),
    );
    assert_eq!(s, 200, "{body}");

    // Invalid values.
    let invalid = [
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            "messages",
        ),
        (json!({"messages": hello, "max_tokens": 0}), "max_tokens"),
        (
            json!({"messages": hello, "max_completion_tokens": 0}),
            "max_tokens",
        ),
    ];
    for (request, param) in invalid {
        let (s, body) = post_json(&rt, CHAT, &request);
        assert_eq!(s, 400, "{request}: {body}");
        assert_eq!(openai_error(&body, "invalid_value")["param"], param);
    }
    // Structured output and tools: each bad part is named, before anything is generated.
    let tool = |parameters: Value| json!([{"type": "function", "function": {"name": "get_price", "parameters": parameters}}]);
    let ok_tool = tool(json!({"type": "object", "properties": {"ticker": {"type": "string"}}}));
    let schema_format = |schema: Value| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}});
    let named = [
        (
            json!({"messages": hello, "response_format": schema_format(json!({"type": "frobnicate"}))}),
            "response_format.json_schema.schema",
            "frobnicate",
        ),
        (
            json!({"messages": hello, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format.json_schema.schema",
            "json_schema.schema",
        ),
        (
            json!({"messages": hello, "response_format": {"type": "yaml"}}),
            "response_format.type",
            "yaml",
        ),
        (
            json!({"messages": hello, "tools": ok_tool, "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
            "\"nope\"",
        ),
        (
            json!({"messages": hello, "tools": ok_tool, "tool_choice": "sometimes"}),
            "tool_choice",
            "sometimes",
        ),
        (
            json!({"messages": hello, "tools": tool(json!({"type": "frobnicate"}))}),
            "tools",
            "tools[0].function.parameters (get_price)",
        ),
        (
            json!({"messages": hello, "tools": [{"type": "function", "function": {"name": "has space"}}]}),
            "tools",
            "tools[0].function.name",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}], "tools": ok_tool}),
            "messages",
            "tool_call_id",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_price", "arguments": "{not json"}}]}]}),
            "messages",
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (request, param, needle) in named {
        let (s, body) = post_json(&rt, CHAT, &request);
        assert_eq!(s, 400, "{request}: {body}");
        let e = openai_error(&body, "invalid_value");
        assert_eq!(e["param"], param, "{body}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    }
    let (s, body) = post_json(&rt, CHAT, &json!({"messages": hello, "temperature": -1}));
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("temperature")
    );
    let (s, body) = post_json(&rt, CHAT, &json!({"messages": hello, "max_tokens": 100000}));
    assert_eq!(s, 400, "{body}");
    openai_error(&body, "context_length_exceeded");
    // The same overflow streamed still gets its status: it happens before any text.
    let (s, _, text) = post(
        &rt,
        CHAT,
        &json!({"messages": hello, "max_tokens": 100000, "stream": true}),
    );
    assert_eq!(s, 400, "{text}");
    let (s, body) = post_json(&rt, "/v1/completions", &json!({"prompt": ["a", "b"]}));
    assert_eq!(s, 400, "{body}");
    openai_error(&body, "unsupported_parameter");

    // Malformed bodies.
    let resp = client()
        .post(format!("{}{CHAT}", rt.url))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    let (s, _, text) = split(resp);
    assert_eq!(s, 400);
    openai_error(&serde_json::from_str(&text).unwrap(), "invalid_json");
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(1100 * 1024)}]});
    let (s, body) = post_json(&rt, CHAT, &big);
    assert_eq!(s, 413, "{body}");
    openai_error(&body, "request_too_large");

    // Embeddings: honest errors, never vectors.
    let (s, body) = post_json(
        &rt,
        "/v1/embeddings",
        &json!({"model": "tiny", "input": "hi"}),
    );
    assert_eq!(s, 400, "{body}");
    let e = openai_error(&body, "model_not_embedding");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not an embedding model")
    );
    let (s, body) = post_json(
        &rt,
        "/v1/embeddings",
        &json!({"model": "all-minilm", "input": ["a", "b"]}),
    );
    assert_eq!(s, 404, "{body}");
    let e = openai_error(&body, "model_not_found");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("no embedding models")
    );
    let (s, body) = post_json(&rt, "/v1/embeddings", &json!({"model": "tiny"}));
    assert_eq!(s, 400, "{body}");
    assert_eq!(openai_error(&body, "invalid_value")["param"], "input");

    // Unknown /v1 routes answer in OpenAI's shape too.
    let (s, body) = post_json(&rt, "/v1/images/generations", &json!({}));
    assert_eq!(s, 404, "{body}");
    assert!(body["error"]["message"].is_string());
}

#[test]
fn the_token_guards_v1_but_not_metrics() {
    let (rt, _dir) = tiny_runtime(Options {
        token: Some("s3cret".into()),
        ..Options::default()
    });
    let request = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let url = format!("{}{CHAT}", rt.url);
    let (s, _, body) = split(client().post(&url).json(&request).send().unwrap());
    assert_eq!(s, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        openai_error(&body, "invalid_api_key")["type"],
        "authentication_error"
    );
    let (s, _, body) = split(
        client()
            .post(&url)
            .bearer_auth("wrong")
            .json(&request)
            .send()
            .unwrap(),
    );
    assert_eq!(s, 403, "{body}");
    let (s, _, body) = post(&rt, CHAT, &request);
    assert_eq!(s, 200, "{body}");
    let (s, _, _) = get(&rt, "/v1/models");
    assert_eq!(s, 401);
    let (s, _, _) = get(&rt, "/metrics");
    assert_eq!(s, 200, "Prometheus scrapes /metrics without a token");
}

#[test]
fn beyond_the_queue_the_api_answers_429_with_retry_after() {
    let (rt, _dir) = tiny_runtime(Options {
        extra_args: ["--model-parallel", "1", "--model-queue-depth", "1"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    let rt = Arc::new(rt);
    // As in the WIT test: bursts of 8 long generations against one session and a queue of
    // one; bursts repeat (bounded) in case one drains before the next call arrives.
    for _round in 0..5 {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let rt = rt.clone();
                std::thread::spawn(move || {
                    post(
                        &rt,
                        CHAT,
                        &json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 64}),
                    )
                })
            })
            .collect();
        let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        assert!(
            results.iter().all(|(s, _, _)| *s == 200 || *s == 429),
            "{results:?}"
        );
        if let Some((_, retry, body)) = results.iter().find(|(s, _, _)| *s == 429) {
            assert_eq!(retry.as_deref(), Some("1"), "429 needs Retry-After");
            let body: Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                openai_error(&body, "model_overloaded")["type"],
                "rate_limit_error"
            );
            let (_, _, metrics) = get(&rt, "/metrics");
            assert!(sample(&metrics, "slmfn_pool_rejected_total").unwrap() >= 1.0);
            return;
        }
    }
    panic!("with one session and a queue of one, bursts of 8 must see 429");
}

#[test]
fn without_models_generation_is_503_and_the_list_is_empty() {
    let data = tempfile::tempdir().unwrap();
    // An empty model cache: the default model is served when cached, and it must not be.
    let cache = data.path().join("models");
    let rt = Runtime::start(
        &data.path().join("data"),
        Options {
            extra_args: vec!["--models-dir".into(), cache.display().to_string()],
            ..Options::default()
        },
    )
    .unwrap();
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(s, 503, "{body}");
    assert_eq!(openai_error(&body, "no_models")["type"], "server_error");
    let (s, _, list) = get(&rt, "/v1/models");
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap(),
        json!({"object": "list", "data": []})
    );
    let (s, body) = post_json(&rt, "/v1/embeddings", &json!({"model": "x", "input": "hi"}));
    assert_eq!(s, 404, "{body}");
    // /metrics still answers, with what there is.
    let (s, content_type, metrics) = get(&rt, "/metrics");
    assert_eq!(s, 200);
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[test]
fn metrics_count_invocations_generations_and_the_pool_without_prompts() {
    let (rt, _dir) = tiny_runtime(Options::default());
    // A generation through the OpenAI API, with a prompt that must never reach /metrics.
    let secret = "the-launch-code-is-0000";
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"messages": [{"role": "user", "content": secret}], "max_tokens": 8, "temperature": 0}),
    );
    assert_eq!(s, 200, "{body}");
    // A generation through the WIT interface of a deployed agent.
    let manifest = "name = \"tb\"\n[models]\nallowed = [\"tiny\"]\n";
    let (s, body) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.deploy("tb", manifest, &guests().testbed))
        .unwrap();
    assert_eq!(s, 201, "{body}");
    let resp = client()
        .post(format!("{}/fn/tb/chat", rt.url))
        .body(r#"{"prompt": "hello", "max_tokens": 8}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let usage: Value = resp.json::<Value>().unwrap()["usage"].clone();
    let resp = client()
        .post(format!("{}/fn/nobody/chat", rt.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);

    let (s, content_type, metrics) = get(&rt, "/metrics");
    assert_eq!(s, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(!metrics.contains(secret), "prompts never reach /metrics");
    assert!(
        !metrics.contains("nobody"),
        "undeployed names are not labels"
    );
    let value = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
    };
    assert_eq!(
        value(r#"slmfn_invocations_total{function="tb",status="200"}"#),
        1.0
    );
    assert_eq!(
        value(r#"slmfn_invocation_duration_seconds_count{function="tb"}"#),
        1.0
    );
    assert_eq!(
        value(r#"slmfn_openai_requests_total{endpoint="/v1/chat/completions",status="200"}"#),
        1.0
    );
    // Both generations, whichever adapter started them.
    let finished: f64 = ["stop", "length"]
        .iter()
        .filter_map(|o| {
            sample(
                &metrics,
                &format!(r#"slmfn_generations_total{{model="tiny",outcome="{o}"}}"#),
            )
        })
        .sum();
    assert_eq!(finished, 2.0, "{metrics}");
    assert!(value(r#"slmfn_prompt_tokens_total{model="tiny"}"#) > 2.0);
    assert!(value(r#"slmfn_completion_tokens_total{model="tiny"}"#) >= 2.0);
    assert_eq!(
        value(r#"slmfn_time_to_first_token_seconds_count{model="tiny"}"#),
        2.0
    );
    // Usage metered per function: the agent's generation only (the API call has no function),
    // the same tokens the guest was told.
    assert_eq!(
        value(r#"slmfn_function_prompt_tokens_total{function="tb",model="tiny"}"#),
        usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        value(r#"slmfn_function_completion_tokens_total{function="tb",model="tiny"}"#),
        usage["completion_tokens"].as_f64().unwrap()
    );
    assert!(value(r#"slmfn_function_inference_seconds_total{function="tb",model="tiny"}"#) > 0.0);
    assert_eq!(
        metrics
            .matches("slmfn_function_prompt_tokens_total{")
            .count(),
        1,
        "only deployed functions are metered: {metrics}"
    );
    // The pool, read at scrape time.
    assert_eq!(value("slmfn_models_loaded"), 1.0);
    assert_eq!(
        value(r#"slmfn_model_state{model="tiny",state="idle"}"#),
        1.0
    );
    assert_eq!(
        value(r#"slmfn_model_state{model="tiny",state="busy"}"#),
        0.0
    );
    assert_eq!(value(r#"slmfn_model_loads_total{model="tiny"}"#), 1.0);
    assert!(value(r#"slmfn_model_memory_bytes{model="tiny"}"#) > 0.0);
    assert_eq!(value(r#"slmfn_model_sessions_busy{model="tiny"}"#), 0.0);
    assert_eq!(value(r#"slmfn_model_queue_depth{model="tiny"}"#), 0.0);
    assert!(value(r#"slmfn_model_load_duration_seconds{model="tiny"}"#) > 0.0);
    assert_eq!(value("slmfn_pool_misses_total"), 1.0);
    assert_eq!(value("slmfn_pool_hits_total"), 1.0);
    assert_eq!(value("slmfn_pool_evictions_total"), 0.0);
    assert_eq!(value("slmfn_pool_rejected_total"), 0.0);
    assert!(value("slmfn_pool_memory_budget_bytes") > 0.0);
    assert!(metrics.ends_with("# EOF\n"));
}

/// The venv's clients, pinned: the official `openai` client and `jsonschema`.
const PYTHON_CLIENTS: [&str; 2] = ["openai==3.57.0", "jsonschema==4.26.0"];

fn openai_python() -> &'static Path {
    crate::support::python_venv("openai-venv", &PYTHON_CLIENTS)
}

/// A runtime (token `sk-test`) serving the model file at `path` as `name`, preloaded.
fn preloaded(name: &str, path: &Path) -> (Runtime, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let options = Options {
        token: Some("sk-test".into()),
        ..Options::preloaded(&[(name, path)])
    };
    (Runtime::start(data.path(), options).unwrap(), data)
}

/// The `tool_selection` extension: each technique answers a call of an offered tool with
/// arguments valid for it; an unknown technique is refused.
#[test]
fn each_tool_selection_technique_answers_a_valid_call() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.gguf");
    // Room for the tool block: the tiny vocabulary spends a token per character.
    slmfn_models::testing::TinyModel {
        context_length: 1024,
        ..Default::default()
    }
    .write(&model)
    .unwrap();
    let rt = Runtime::start(
        &dir.path().join("data"),
        Options {
            extra_args: vec!["--model".into(), format!("tiny={}", model.display())],
            ..Options::default()
        },
    )
    .unwrap();
    let tools = json!([
        {"type": "function", "function": {"name": "get_price", "parameters": {"type": "object", "properties": {"ticker": {"type": "string", "description": "ticker symbol"}}, "required": ["ticker"]}}},
        {"type": "function", "function": {"name": "get_build_log", "parameters": {"type": "object", "properties": {"build": {"type": "integer"}}, "required": ["build"]}}},
    ]);
    for technique in ["grammar", "spans", "scores"] {
        let ask = json!({"messages": [{"role": "user", "content": "price of ACME?"}],
                         "tools": tools, "tool_choice": "required", "max_tokens": 300,
                         "temperature": 0, "tool_selection": technique});
        let (s, body) = post_json(&rt, CHAT, &ask);
        assert_eq!(s, 200, "{technique}: {body}");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{technique}: {body}");
        let call = &choice["message"]["tool_calls"][0]["function"];
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        match call["name"].as_str().unwrap() {
            "get_price" => assert!(args["ticker"].is_string(), "{body}"),
            "get_build_log" => assert!(args["build"].is_i64(), "{body}"),
            other => panic!("{other}"),
        }
        if technique != "grammar" {
            // No number in the request: the build-log tool is not a candidate, and the only
            // upper-case word is the ticker.
            assert_eq!(call["name"], "get_price", "{technique}: {body}");
            assert_eq!(args["ticker"], "ACME", "{technique}: {body}");
        }
    }
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_selection": "magic"}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("magic"),
        "{body}"
    );
}

/// Runs the client script `tests/clients/{script}` against a runtime serving the real
/// SmolLM2; returns the JSON summary it prints when every check passed.
fn run_client_against_the_real_model(script: &str) -> Value {
    run_against_the_real_model(openai_python(), script)
}

/// `script` run by `python` against a runtime serving the real model (token `sk-test`); its
/// JSON summary line.
fn run_against_the_real_model(python: &Path, script: &str) -> Value {
    let model = real_model();
    let (rt, _data) = preloaded("smollm2", &model);
    let out = Command::new(python)
        .arg(crate::support::repo().join("tests/clients").join(script))
        .args(["--base-url", &format!("{}/v1", rt.url)])
        .args(["--api-key", "sk-test", "--model", "smollm2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} checks failed:\n{stdout}\n{}\nruntime log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn the_official_openai_python_client_chats_with_the_real_model() {
    let summary = run_client_against_the_real_model("openai_client.py");
    assert!(summary["answer"].as_str().unwrap().contains("Paris"));
}

/// Structured output (`response_format` json_schema at temperature 0.9 over 20 seeds,
/// json_object, the client's `parse` helper) and tool calling (`tool_choice` required, auto, a
/// named function, streamed and not, a multi-turn exchange with a tool result), every answer
/// checked with `jsonschema` against the declared schema.
#[test]
fn the_official_openai_python_client_gets_structured_answers_and_tool_calls() {
    let summary = run_client_against_the_real_model("openai_tools.py");
    assert!(summary["required"].is_string(), "{summary}");
    eprintln!("{summary}");
}

/// An OpenAI-style agent framework, unchanged: the OpenAI Agents SDK over chat completions
/// calls a function tool with the ticker the user wrote, gets its result, and ends with text
/// (a repeated call after the result is answered as text instead).
#[test]
fn the_openai_agents_sdk_runs_a_tool_loop_against_the_real_model() {
    let python = crate::support::python_venv(
        "openai-agents-venv",
        &["openai==3.57.0", "openai-agents==0.24.0"],
    );
    let summary = run_against_the_real_model(python, "openai_agents.py");
    assert_eq!(
        summary["calls"],
        json!([["get_price", "ACME"]]),
        "{summary}"
    );
    assert!(
        summary["final_output"]
            .as_str()
            .is_some_and(|t| !t.trim().is_empty())
    );
}

#[test]
fn a_client_that_disconnects_cancels_its_generation() {
    let model = real_model();
    let data = tempfile::tempdir().unwrap();
    let rt = Runtime::start(data.path(), Options::preloaded(&[("smollm2", &model)])).unwrap();
    let long = |stream: bool| {
        json!({
            "messages": [{"role": "user", "content": "Write a very long story about a dragon, in many chapters."}],
            "max_tokens": 2000,
            "temperature": 0,
            "stream": stream,
        })
    };
    for (round, stream) in [false, true].into_iter().enumerate() {
        // The client sends the request, waits until the model generates for it (the
        // runtime's own gauge), then goes away without reading the answer.
        let body = long(stream).to_string();
        let addr = rt.url.trim_start_matches("http://");
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        write!(
            conn,
            "POST {CHAT} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let started = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, metrics) = get(&rt, "/metrics");
            if sample(&metrics, r#"slmfn_model_sessions_busy{model="smollm2"}"#) == Some(1.0) {
                break;
            }
            assert!(
                Instant::now() < started,
                "the generation never started:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(conn);
        // The generation ends cancelled (had it run to its end, it would count as `length`),
        // and the session is free again. The deadline only bounds a hang.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, _, metrics) = get(&rt, "/metrics");
            let cancelled = sample(
                &metrics,
                r#"slmfn_generations_total{model="smollm2",outcome="cancelled"}"#,
            );
            let busy = sample(&metrics, r#"slmfn_model_sessions_busy{model="smollm2"}"#);
            if cancelled == Some(round as f64 + 1.0) && busy == Some(0.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the generation kept running after the client left:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

const EMBEDDINGS: &str = "/v1/embeddings";

/// The vectors of an embeddings response, checked for OpenAI's shape.
#[track_caller]
fn vectors(body: &Value) -> Vec<Vec<f64>> {
    assert_eq!(body["object"], "list", "{body}");
    let data = body["data"].as_array().unwrap();
    data.iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Decodes OpenAI's `base64` embedding (little-endian f32).
fn decode_base64_f32(text: &str) -> Vec<f64> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        bytes.extend_from_slice(&n.to_be_bytes()[1..digits.len()]);
    }
    bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
        .collect()
}

#[test]
fn embeddings_answer_in_openai_shapes_and_agents_embed_through_wit() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("emb.zip");
    slmfn_models::embed::testing::TinyBert::default()
        .write_zip(&zip, "")
        .unwrap();
    let (rt, _tiny_dir) = tiny_runtime(Options {
        extra_args: vec!["--model".into(), format!("emb={}", zip.display())],
        ..Options::default()
    });

    // Both kinds are listed.
    let (s, _, models) = get(&rt, "/v1/models");
    assert_eq!(s, 200, "{models}");
    let models: Value = serde_json::from_str(&models).unwrap();
    let kind = |name: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {models}"))["kind"]
            .clone()
    };
    assert_eq!(kind("emb"), "embedding");
    assert_eq!(kind("tiny"), "chat");
    let (s, admin) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rt.admin_get("/models"))
        .unwrap();
    assert_eq!(s, 200);
    let emb = admin["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "emb")
        .unwrap()
        .clone();
    assert_eq!(emb["kind"], "embedding", "{admin}");
    assert_eq!(admin["default_model"], "tiny");
    assert_eq!(admin["default_embedding_model"], "emb");

    // One string; `model` omitted means the default embedding model.
    let (s, body) = post_json(&rt, EMBEDDINGS, &json!({"input": "hello world"}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["model"], "emb");
    let one = vectors(&body);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].len(), 16);
    assert!((norm(&one[0]) - 1.0).abs() < 1e-4);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );

    // A list, in order; the same text gives the same vector in any batch.
    let (s, body) = post_json(
        &rt,
        EMBEDDINGS,
        &json!({"model": "emb", "input": ["the cat sat on the mat today", "hello world", "a dog"], "encoding_format": "float"}),
    );
    assert_eq!(s, 200, "{body}");
    let many = vectors(&body);
    assert_eq!(many.len(), 3);
    let diff: f64 = many[1]
        .iter()
        .zip(&one[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-4, "batching changed the vector by {diff}");

    // base64: little-endian f32 of the same vector.
    let (s, body) = post_json(
        &rt,
        EMBEDDINGS,
        &json!({"model": "emb", "input": ["hello world"], "encoding_format": "base64", "dimensions": 16}),
    );
    assert_eq!(s, 200, "{body}");
    let decoded = decode_base64_f32(body["data"][0]["embedding"].as_str().unwrap());
    assert_eq!(decoded.len(), 16);
    assert!(
        decoded
            .iter()
            .zip(&one[0])
            .all(|(a, b)| (a - b).abs() < 1e-6)
    );

    // Errors.
    let cases = [
        (
            json!({"model": "tiny", "input": "hi"}),
            400,
            "model_not_embedding",
        ),
        (
            json!({"model": "nope", "input": "hi"}),
            404,
            "model_not_found",
        ),
        (json!({"model": "emb"}), 400, "invalid_value"),
        (json!({"model": "emb", "input": []}), 400, "invalid_value"),
        (
            json!({"model": "emb", "input": [1, 2, 3]}),
            400,
            "unsupported_parameter",
        ),
        (
            json!({"model": "emb", "input": "hi", "encoding_format": "int8"}),
            400,
            "invalid_value",
        ),
        (
            json!({"model": "emb", "input": "hi", "dimensions": 8}),
            400,
            "unsupported_parameter",
        ),
        (
            json!({"model": "emb", "input": vec!["cat"; 31].join(" ")}),
            400,
            "invalid_value",
        ),
    ];
    for (request, status, code) in cases {
        let (s, body) = post_json(&rt, EMBEDDINGS, &request);
        assert_eq!(s, status, "{request}: {body}");
        openai_error(&body, code);
    }
    let (_, body) = post_json(
        &rt,
        EMBEDDINGS,
        &json!({"model": "emb", "input": ["hi", vec!["cat"; 31].join(" ")]}),
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("text 1")
            && message.contains("33 tokens")
            && message.contains("at most 32"),
        "{message}"
    );
    assert_eq!(body["error"]["param"], "input");
    let (_, body) = post_json(&rt, EMBEDDINGS, &json!({"model": "nope", "input": "hi"}));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("embedding models: emb"),
        "{body}"
    );
    // Chat on the embedding model: 400, not a generation.
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"model": "emb", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(s, 400, "{body}");
    let e = openai_error(&body, "model_not_chat");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("is an embedding model"),
        "{body}"
    );
    // Chat without a model still goes to the default chat model.
    let (s, body) = post_json(
        &rt,
        CHAT,
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["model"], "tiny");

    // An agent embeds through the WIT interface; the allow-list applies.
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let deploy = |name: &str, allowed: &str| {
        let manifest = format!("name = \"{name}\"\n[models]\nallowed = [{allowed}]\n");
        let (s, body) = tokio
            .block_on(rt.deploy(name, &manifest, &guests().testbed))
            .unwrap();
        assert_eq!(s, 201, "{body}");
    };
    deploy("both", "\"tiny\", \"emb\"");
    deploy("chat-only", "\"tiny\"");
    let invoke = |name: &str, path: &str, body: Value| {
        tokio
            .block_on(rt.invoke(name, path, &body.to_string()))
            .unwrap()
    };
    let (s, body) = invoke("both", "/embed", json!({"texts": ["hello world", "a dog"]}));
    assert_eq!(s, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let wit: Vec<Vec<f64>> = body["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(wit.len(), 2);
    assert!(
        wit.iter()
            .all(|v| v.len() == 16 && (norm(v) - 1.0).abs() < 1e-4)
    );
    assert!(
        wit[0]
            .iter()
            .zip(&one[0])
            .all(|(a, b)| (a - b).abs() < 1e-4)
    );
    // Chat still resolves to the only allowed chat model.
    let (s, body) = invoke("both", "/chat", json!({"prompt": "hello", "max_tokens": 2}));
    assert_eq!(s, 200, "{body}");
    // The wrong kind: invalid input, both ways.
    let (s, body) = invoke("both", "/embed", json!({"texts": ["hi"], "model": "tiny"}));
    assert_eq!(s, 500, "{body}");
    assert!(
        body.contains("invalid input") && body.contains("not an embedding model"),
        "{body}"
    );
    let (s, body) = invoke("both", "/chat", json!({"prompt": "hi", "model": "emb"}));
    assert_eq!(s, 500, "{body}");
    assert!(
        body.contains("invalid input") && body.contains("is an embedding model"),
        "{body}"
    );
    let (s, body) = invoke(
        "both",
        "/embed",
        json!({"texts": [vec!["cat"; 31].join(" ")]}),
    );
    assert_eq!(s, 500, "{body}");
    assert!(
        body.contains("invalid input") && body.contains("33 tokens"),
        "{body}"
    );
    // Not allowed: model-not-found, named or not.
    for request in [
        json!({"texts": ["hi"], "model": "emb"}),
        json!({"texts": ["hi"]}),
    ] {
        let (s, body) = invoke("chat-only", "/embed", request);
        assert_eq!(s, 500, "{body}");
        assert!(body.contains("model not found"), "{body}");
    }

    // Counted, without the texts.
    let (_, _, metrics) = get(&rt, "/metrics");
    assert!(
        sample(
            &metrics,
            r#"slmfn_embeddings_total{model="emb",outcome="ok"}"#
        )
        .unwrap()
            >= 4.0,
        "{metrics}"
    );
    assert!(sample(&metrics, r#"slmfn_prompt_tokens_total{model="emb"}"#).unwrap() > 4.0);
    assert_eq!(
        sample(&metrics, r#"slmfn_model_state{model="emb",state="idle"}"#),
        Some(1.0)
    );
}

/// The official client's checks on the real all-MiniLM-L6-v2 (default `base64` transport and
/// `float`), printed as one JSON line.
const EMBEDDINGS_CLIENT: &str = r#"
import json, math, sys
import openai
client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2])
texts = ["How do I reset my password?", "I forgot my password", "The weather is lovely today."]
resp = client.embeddings.create(model="minilm", input=texts)
vectors = [d.embedding for d in resp.data]
floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
single = client.embeddings.create(model="minilm", input="How do I reset my password?")
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
try:
    client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
    chat_error = None
except openai.BadRequestError as e:
    chat_error = str(e)
try:
    client.embeddings.create(model="minilm", input="word " * 600)
    long_error = None
except openai.BadRequestError as e:
    long_error = str(e)
print(json.dumps({
    "model": resp.model,
    "dims": [len(v) for v in vectors],
    "norms": [math.sqrt(sum(x * x for x in v)) for v in vectors],
    "similar": cos(vectors[0], vectors[1]),
    "unrelated": cos(vectors[0], vectors[2]),
    "float_vs_base64": max(abs(a - b) for a, b in zip(floats.data[0].embedding, vectors[0])),
    "single_vs_batch": max(abs(a - b) for a, b in zip(single.data[0].embedding, vectors[0])),
    "prompt_tokens": resp.usage.prompt_tokens,
    "total_tokens": resp.usage.total_tokens,
    "chat_error": chat_error,
    "long_error": long_error,
}))
"#;

#[test]
fn the_official_openai_python_client_embeds_with_the_real_minilm() {
    let model = real_embed_model();
    let python = openai_python();
    let (rt, _data) = preloaded("minilm", &model);
    let out = Command::new(python)
        .args([
            "-c",
            EMBEDDINGS_CLIENT,
            &format!("{}/v1", rt.url),
            "sk-test",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client embeddings failed:\n{stdout}\n{}\nruntime log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    );
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["model"], "minilm");
    assert_eq!(summary["dims"], json!([384, 384, 384]), "{summary}");
    for n in summary["norms"].as_array().unwrap() {
        assert!((n.as_f64().unwrap() - 1.0).abs() < 1e-4, "{summary}");
    }
    let similar = summary["similar"].as_f64().unwrap();
    let unrelated = summary["unrelated"].as_f64().unwrap();
    assert!(
        similar > unrelated + 0.3 && similar > 0.5,
        "password sentences must be closer than an unrelated one: {summary}"
    );
    assert!(
        summary["float_vs_base64"].as_f64().unwrap() < 1e-6,
        "{summary}"
    );
    assert!(
        summary["single_vs_batch"].as_f64().unwrap() < 1e-4,
        "{summary}"
    );
    assert!(
        summary["prompt_tokens"].as_u64().unwrap() >= 3 * 5,
        "{summary}"
    );
    assert_eq!(summary["prompt_tokens"], summary["total_tokens"]);
    assert!(
        summary["chat_error"]
            .as_str()
            .is_some_and(|e| e.contains("is an embedding model")),
        "{summary}"
    );
    assert!(
        summary["long_error"]
            .as_str()
            .is_some_and(|e| e.contains("tokens") && e.contains("512")),
        "{summary}"
    );
}
