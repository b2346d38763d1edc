//! Agents calling models through the WIT `inference` interface: the real SmolLM2 end to end,
//! and pool behaviour (allow-lists, overload, streaming) on a tiny model the test writes.

use std::path::PathBuf;
use std::sync::Arc;

use crate::support::{Options, Runtime, guests, real_model, repo};

/// A tiny model with room for a tool block (its byte-level vocabulary spends a token per
/// character).
fn tiny_model(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    slmfn_models::testing::TinyModel {
        context_length: 1024,
        ..Default::default()
    }
    .write(&path)
    .unwrap();
    path
}

/// The support-desk example with the real models, deployed and invoked with the `fn` CLI as
/// its README says: asked about ticket 4412 it calls `tickets.get` (the `functions/tickets`
/// tool component) with 4412 and answers with that ticket's status; a how-to question goes to
/// the FAQ search (embeddings); greedy answers repeat exactly; the loop stops at its step
/// limit.
#[test]
fn support_desk_looks_tickets_up_with_the_real_model() {
    let data = tempfile::tempdir().unwrap();
    let rt = real_runtime(data.path(), true);
    for function in ["tickets", "support-desk"] {
        rt.fn_deploy(&repo().join("functions").join(function));
    }
    let ask = |data: &str| rt.fn_invoke_json("support-desk", data);
    let ticket = r#"{"question": "What is the status of ticket 4412?"}"#;
    let first = ask(ticket);
    let calls = first["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{first}");
    assert_eq!(calls[0]["name"], "tickets.get", "{first}");
    assert_eq!(calls[0]["arguments"], serde_json::json!({"id": 4412}));
    assert!(
        calls[0]["result"]
            .as_str()
            .unwrap()
            .contains("replacement shipped"),
        "{first}"
    );
    let answer = first["answer"].as_str().unwrap();
    assert!(
        answer.contains("replacement shipped"),
        "the answer should give the ticket's status: {answer:?}"
    );
    assert_eq!(first["stop"], "answered");
    assert!(first["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        ask(ticket)["answer"],
        first["answer"],
        "greedy decoding must be deterministic"
    );

    let faq = ask(r#"{"question": "How long does a refund take?"}"#);
    assert_eq!(faq["tool_calls"][0]["name"], "faq.search", "{faq}");
    assert!(
        faq["tool_calls"][0]["result"]
            .as_str()
            .unwrap()
            .contains("3 to 5 business days"),
        "{faq}"
    );

    let limited = ask(r#"{"question": "What is the status of ticket 4412?", "max_steps": 1}"#);
    assert_eq!(limited["stop"], "step-limit", "{limited}");
    assert!(limited["answer"].is_null());
    assert_eq!(limited["tool_calls"].as_array().unwrap().len(), 1);
}

/// The CI-triage and market-analyst examples with the real model, deployed and invoked with
/// the `fn` CLI: the triage is JSON with the failing step read from the log (a long log
/// searched with `log.search` first); the analyst's numbers come from `prices.stats`.
#[test]
fn the_ci_triage_and_market_analyst_examples_answer_with_the_real_model() {
    let data = tempfile::tempdir().unwrap();
    let rt = real_runtime(data.path(), false);
    for function in ["ci-triage", "market-analyst"] {
        rt.fn_deploy(&repo().join("functions").join(function));
    }
    let invoke = |function: &str, data: &str| rt.fn_invoke_json(function, data);
    for (sample, step) in [
        ("rust-test-failure", "cargo test --locked"),
        ("npm-404", "npm ci"),
        ("docker-oom", "docker build -t shop-api ."),
    ] {
        let answer = invoke("ci-triage", &format!(r#"{{"sample": "{sample}"}}"#));
        let triage = &answer["triage"];
        assert_eq!(triage["failing_step"], step, "{answer}");
        for field in ["likely_cause", "suggested_fix"] {
            assert!(triage[field].as_str().unwrap().len() >= 10, "{answer}");
        }
        // Only the long log is searched.
        assert_eq!(
            answer["searched"].is_string(),
            sample == "rust-test-failure",
            "{answer}"
        );
    }
    // The same agent, event-driven: `fn send` posts a dev.ci.build.failed event; the reply is
    // a dev.ci.build.triaged event carrying the triage.
    let send = |args: &[&str]| {
        let out = crate::support::fn_cli()
            .args(["send", "--url", &rt.url])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fn send failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            rt.log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let reply: serde_json::Value = serde_json::from_str(&send(&[
        "--type",
        "dev.ci.build.failed",
        "--source",
        "/ci/acme/shop",
        "--subject",
        "build-981",
        "--data",
        r#"{"sample": "npm-404"}"#,
    ]))
    .unwrap();
    assert_eq!(reply["type"], "dev.ci.build.triaged", "{reply}");
    assert_eq!(reply["source"], "/fn/ci-triage", "{reply}");
    assert_eq!(reply["subject"], "build-981", "{reply}");
    assert_eq!(reply["data"]["triage"]["failing_step"], "npm ci", "{reply}");
    let other = send(&["--type", "dev.ci.build.passed", "--data", "{}"]);
    assert!(other.starts_with("accepted: no reply"), "{other}");

    let answer = invoke(
        "market-analyst",
        r#"{"question": "How has BOLT been trading?"}"#,
    );
    assert_eq!(answer["tool_calls"][0]["name"], "prices.stats", "{answer}");
    assert_eq!(answer["stats"][0]["symbol"], "BOLT", "{answer}");
    assert_eq!(answer["stats"][0]["trend"], "down", "{answer}");
    assert!(
        answer["answer"].as_str().unwrap().contains("BOLT"),
        "{answer}"
    );
}

/// A runtime serving the real SmolLM2 (preloaded) and, when `embeddings`, MiniLM.
fn real_runtime(data: &std::path::Path, embeddings: bool) -> Runtime {
    let (model, embed) = (real_model(), crate::support::real_embed_model());
    let mut models = vec![("smollm2", model.as_path())];
    if embeddings {
        models.push(("minilm", embed.as_path()));
    }
    Runtime::start(data, Options::preloaded(&models)).unwrap()
}

async fn tiny_runtime(extra: &[&str]) -> (Arc<Runtime>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut args = vec!["--model".to_string(), format!("tiny={}", model.display())];
    args.extend(extra.iter().map(|s| s.to_string()));
    let data = dir.path().join("data");
    let rt = tokio::task::block_in_place(|| {
        Runtime::start(
            &data,
            Options {
                extra_args: args,
                ..Options::default()
            },
        )
    })
    .unwrap();
    (Arc::new(rt), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_streaming_and_errors_through_the_wit_interface() {
    let (rt, _dir) = tiny_runtime(&[]).await;
    let g = guests();
    let allowed = "name = \"tb\"\n[models]\nallowed = [\"tiny\"]\n";
    assert_eq!(rt.deploy("tb", allowed, &g.testbed).await.unwrap().0, 201);
    let (s, body) = rt
        .invoke("tb", "/chat", r#"{"prompt": "hello", "max_tokens": 8}"#)
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let whole: serde_json::Value = serde_json::from_str(&body).unwrap();
    // Streaming yields the same greedy text, in chunks.
    let (s, body) = rt
        .invoke(
            "tb",
            "/chat",
            r#"{"prompt": "hello", "max_tokens": 8, "stream": true}"#,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let streamed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(whole["text"], streamed["text"]);
    let joined: String = streamed["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(joined, streamed["text"].as_str().unwrap());

    // A model the manifest does not allow, and one the runtime does not have.
    let (s, body) = rt
        .invoke("tb", "/chat", r#"{"prompt": "hi", "model": "other"}"#)
        .await
        .unwrap();
    assert_eq!(s, 500);
    assert!(body.contains("not allowed for this function"), "{body}");
    // Context overflow is a typed error, not a crash.
    let (s, body) = rt
        .invoke("tb", "/chat", r#"{"prompt": "hi", "max_tokens": 100000}"#)
        .await
        .unwrap();
    assert_eq!(s, 500);
    assert!(body.contains("context length exceeded"), "{body}");

    // A function that may use no model.
    assert_eq!(
        rt.deploy("bare", "name = \"bare\"\n", &g.testbed)
            .await
            .unwrap()
            .0,
        201
    );
    let (s, body) = rt
        .invoke("bare", "/chat", r#"{"prompt": "hi"}"#)
        .await
        .unwrap();
    assert_eq!(s, 500);
    assert!(body.contains("may use no model"), "{body}");
}

/// A deployed guest's `response-format`: JSON schema, any JSON and a Lark grammar hold at
/// temperature 1 over several seeds, whole and streamed; a bad schema or grammar is
/// `invalid-input` naming it, before anything is generated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_gets_answers_in_its_response_format() {
    let (rt, _dir) = tiny_runtime(&[]).await;
    let g = guests();
    let manifest = "name = \"tb\"\n[models]\nallowed = [\"tiny\"]\n";
    assert_eq!(rt.deploy("tb", manifest, &g.testbed).await.unwrap().0, 201);
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad"]}, "level": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["mood", "level"],
        "additionalProperties": false,
    });
    for seed in 0..5 {
        for stream in [false, true] {
            let body = serde_json::json!({
                "prompt": "hello", "max_tokens": 40, "temperature": 1.0, "seed": seed,
                "stream": stream, "json_schema": schema,
            });
            let (s, out) = rt.invoke("tb", "/chat", &body.to_string()).await.unwrap();
            assert_eq!(s, 200, "{out}");
            let out: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(out["finish_reason"], "stop", "{out}");
            let answer: serde_json::Value =
                serde_json::from_str(out["text"].as_str().unwrap()).unwrap();
            assert!(
                ["happy", "sad"].contains(&answer["mood"].as_str().unwrap()),
                "{answer}"
            );
            assert!(answer["level"].as_u64().unwrap() <= 9, "{answer}");
        }
        let body = serde_json::json!({
            "prompt": "hi", "max_tokens": 12, "temperature": 1.0, "seed": seed,
            "grammar": "start: (\"yes\" | \"no\") \".\"",
        });
        let (s, out) = rt.invoke("tb", "/chat", &body.to_string()).await.unwrap();
        assert_eq!(s, 200, "{out}");
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            ["yes.", "no."].contains(&out["text"].as_str().unwrap()),
            "{out}"
        );
    }
    let (s, out) = rt
        .invoke(
            "tb",
            "/chat",
            r#"{"prompt": "hi", "max_tokens": 24, "json": true}"#,
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{out}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    if out["finish_reason"] == "stop" {
        serde_json::from_str::<serde_json::Value>(out["text"].as_str().unwrap()).unwrap();
    }
    for (body, needle) in [
        (
            r#"{"prompt": "hi", "json_schema": {"type": "frobnicate"}}"#,
            "invalid JSON schema",
        ),
        (
            r#"{"prompt": "hi", "grammar": "start: undefined_rule"}"#,
            "invalid Lark grammar",
        ),
    ] {
        let (s, out) = rt.invoke("tb", "/chat", body).await.unwrap();
        assert_eq!(s, 500, "{out}");
        assert!(
            out.contains("invalid input") && out.contains(needle),
            "{out}"
        );
    }
}

/// `chat-with-tools` from a deployed guest: under `required` and a named tool the answer is a
/// call of an offered tool whose arguments validate, at temperature 1 over several seeds; under
/// `auto` text or a call; a conversation with the call and its result continues; bad tools and
/// turns are `invalid-input` naming them. `chat_json::<T>` parses into the guest's type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_calls_tools_through_chat_with_tools() {
    let (rt, _dir) = tiny_runtime(&[]).await;
    let g = guests();
    let manifest = "name = \"tb\"\n[models]\nallowed = [\"tiny\"]\n";
    assert_eq!(rt.deploy("tb", manifest, &g.testbed).await.unwrap().0, 201);
    let tools = serde_json::json!([
        {"name": "market.price", "description": "Latest price of a ticker",
         "input_schema": {"type": "object", "properties": {"ticker": {"enum": ["ACME", "GLOBEX"]}}, "required": ["ticker"]}},
        {"name": "faq.search", "description": "Search the FAQ",
         "input_schema": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 12}}, "required": ["query"]}},
    ]);
    let ask = |choice: &str, seed: u64| {
        serde_json::json!({
            "turns": [{"role": "user", "content": "What is ACME at?"}],
            "tools": tools, "choice": choice, "max_tokens": 200, "temperature": 1.0, "seed": seed,
        })
        .to_string()
    };
    let mut first_call = None;
    for seed in 0..4 {
        for choice in ["required", "market.price", "faq.search"] {
            let (s, out) = rt
                .invoke("tb", "/tools/chat", &ask(choice, seed))
                .await
                .unwrap();
            assert_eq!(s, 200, "{out}");
            let out: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(out["finish_reason"], "tool-calls", "{choice}: {out}");
            assert_eq!(out["text"], "");
            let call = &out["tool_calls"][0];
            let name = call["name"].as_str().unwrap();
            let args: serde_json::Value =
                serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
            match name {
                "market.price" => {
                    assert!(["ACME", "GLOBEX"].contains(&args["ticker"].as_str().unwrap()))
                }
                "faq.search" => assert!(args["query"].as_str().unwrap().chars().count() <= 12),
                other => panic!("called {other}"),
            }
            if choice != "required" {
                assert_eq!(name, choice);
            }
            assert!(call["id"].as_str().unwrap().starts_with("call_"));
            first_call.get_or_insert_with(|| call.clone());
        }
        let (s, out) = rt
            .invoke("tb", "/tools/chat", &ask("auto", seed))
            .await
            .unwrap();
        assert_eq!(s, 200, "{out}");
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        match out["finish_reason"].as_str().unwrap() {
            "tool-calls" => assert!(out["tool_calls"][0]["name"].is_string(), "{out}"),
            "stop" | "length" => {
                assert!(out["tool_calls"].as_array().unwrap().is_empty());
                assert!(!out["text"].as_str().unwrap().trim_start().starts_with('{'));
            }
            other => panic!("{other}: {out}"),
        }
    }
    // The call and its result in the history: the conversation goes on.
    let call = first_call.unwrap();
    let body = serde_json::json!({
        "turns": [
            {"role": "user", "content": "What is ACME at?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "{\"price\": 12.5}", "tool_call_id": call["id"]},
        ],
        "tools": tools, "choice": "auto", "max_tokens": 16,
    });
    let (s, out) = rt
        .invoke("tb", "/tools/chat", &body.to_string())
        .await
        .unwrap();
    assert_eq!(s, 200, "{out}");
    // Bad tools and turns are named.
    let bad = [
        (
            serde_json::json!({"turns": [{"role": "user", "content": "x"}], "tools": [{"name": "t", "input_schema": {"type": "frobnicate"}}]}),
            "tools[0] (t)",
        ),
        (
            serde_json::json!({"turns": [{"role": "user", "content": "x"}], "tools": tools, "choice": "nope"}),
            "which is not among the tools",
        ),
        (
            serde_json::json!({"turns": [{"role": "tool", "content": "x"}], "tools": tools}),
            "tool-call-id",
        ),
        (
            serde_json::json!({"turns": [{"role": "user", "content": "x"}], "tools": []}),
            "tools must not be empty",
        ),
    ];
    for (body, needle) in bad {
        let (s, out) = rt
            .invoke("tb", "/tools/chat", &body.to_string())
            .await
            .unwrap();
        assert_eq!(s, 500, "{out}");
        assert!(
            out.contains("invalid input") && out.contains(needle),
            "{needle}: {out}"
        );
    }
    // chat_json::<Verdict>: the type's schema, parsed.
    for seed in 0..4 {
        let body = serde_json::json!({"prompt": "rate this", "temperature": 1.0, "seed": seed});
        let (s, out) = rt.invoke("tb", "/json", &body.to_string()).await.unwrap();
        assert_eq!(s, 200, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(
            ["good", "bad"].contains(&v["label"].as_str().unwrap()),
            "{v}"
        );
        assert!(v["score"].as_u64().unwrap() <= 255);
    }
}

/// A component built against `slmfn:agent@0.1.0` (the testbed as it was before 0.1.1 added
/// `chat-with-tools`, committed as `tests/fixtures/testbed-0.1.0.wasm`) is refused at deploy
/// by this 0.2.0 runtime with a message naming the version to rebuild against, and the
/// revision already deployed under that name keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_built_against_0_1_is_refused_naming_the_version() {
    let (rt, _dir) = tiny_runtime(&[]).await;
    let manifest = "name = \"old\"\n[models]\nallowed = [\"tiny\"]\n";
    let (s, body) = rt.deploy("old", manifest, &guests().testbed).await.unwrap();
    assert_eq!(s, 201, "{body}");
    let old =
        std::fs::read(crate::support::repo().join("tests/fixtures/testbed-0.1.0.wasm")).unwrap();
    let (s, body) = rt.deploy("old", manifest, &old).await.unwrap();
    assert_eq!(s, 400, "{body}");
    let message = body.to_string();
    assert!(
        message.contains("built against slmfn:agent@0.1.0")
            && message.contains("rebuild it with slmfn-sdk 0.2.0"),
        "{body}"
    );
    let (s, body) = rt.invoke("old", "/echo", "ping").await.unwrap();
    assert_eq!(
        (s, body.as_str()),
        (200, "ping"),
        "the 0.2.0 revision still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_agents_get_429_with_retry_after() {
    let (rt, _dir) = tiny_runtime(&["--model-parallel", "1", "--model-queue-depth", "1"]).await;
    let manifest =
        "name = \"tb\"\n[limits]\nmax_concurrency = 32\n[models]\nallowed = [\"tiny\"]\n";
    assert_eq!(
        rt.deploy("tb", manifest, &guests().testbed)
            .await
            .unwrap()
            .0,
        201
    );
    // Generations as long as the tiny model's context allows keep the one session busy; a
    // burst of 8 calls then overflows the queue. Bursts repeat (bounded) in case one drains
    // before the next call arrives.
    let mut seen_overload = false;
    for _round in 0..5 {
        let mut calls = Vec::new();
        for _ in 0..8 {
            let rt = rt.clone();
            calls.push(tokio::spawn(async move {
                let r = rt
                    .client()
                    .post(format!("{}/fn/tb/chat", rt.url))
                    .body(r#"{"prompt": "hello", "max_tokens": 64}"#)
                    .send()
                    .await
                    .unwrap();
                (
                    r.status().as_u16(),
                    r.headers().get("retry-after").is_some(),
                )
            }));
        }
        let mut statuses = Vec::new();
        for c in calls {
            statuses.push(c.await.unwrap());
        }
        let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
        let overloaded = statuses
            .iter()
            .filter(|(s, retry)| *s == 429 && *retry)
            .count();
        assert!(ok >= 1, "the running call must complete: {statuses:?}");
        assert_eq!(
            ok + overloaded,
            8,
            "only 200 or 429 with Retry-After: {statuses:?}"
        );
        if overloaded > 0 {
            seen_overload = true;
            break;
        }
    }
    assert!(
        seen_overload,
        "with one session and a queue of one, bursts of 8 must see 429"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_lists_loads_and_unloads_models() {
    let (rt, _dir) = tiny_runtime(&["--model-keep-alive", "forever"]).await;
    let state = |v: &serde_json::Value| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "tiny")
            .unwrap()["state"]
            .clone()
    };
    let (s, v) = rt.admin_get("/models").await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(state(&v), "unloaded");
    assert_eq!(v["default_model"], "tiny");
    let c = rt.client();
    let r = c
        .post(format!("{}/admin/models/tiny/load", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = rt.admin_get("/models").await.unwrap();
    assert_eq!(state(&v), "idle");
    assert!(v["memory_used_bytes"].as_u64().unwrap() > 0);
    let r = c
        .post(format!("{}/admin/models/tiny/unload", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = rt.admin_get("/models").await.unwrap();
    assert_eq!(state(&v), "unloaded");
    let r = c
        .post(format!("{}/admin/models/nope/load", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A model the runtime serves is refused to a function whose manifest does not allow it (the
/// absent model is covered above): the call fails naming the allow-list, the model is not
/// even loaded for it, and a function that allows it is served by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_model_the_manifest_does_not_allow_is_refused() {
    let other_dir = tempfile::tempdir().unwrap();
    let other = tiny_model(other_dir.path());
    let (rt, _dir) = tiny_runtime(&["--model", &format!("other={}", other.display())]).await;
    let g = guests();
    let only_tiny = "name = \"tb\"\n[models]\nallowed = [\"tiny\"]\n";
    assert_eq!(rt.deploy("tb", only_tiny, &g.testbed).await.unwrap().0, 201);
    let state = |v: &serde_json::Value, name: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))["state"]
            .clone()
    };
    let (s, models) = rt.admin_get("/models").await.unwrap();
    assert_eq!((s, state(&models, "other")), (200, "unloaded".into()));
    let chat_other = |function: &'static str| {
        let rt = rt.clone();
        async move {
            rt.invoke(
                function,
                "/chat",
                r#"{"prompt": "hi", "model": "other", "max_tokens": 2}"#,
            )
            .await
            .unwrap()
        }
    };
    let (s, body) = chat_other("tb").await;
    assert_eq!(s, 500, "{body}");
    assert!(body.contains("not allowed for this function"), "{body}");
    let (_, models) = rt.admin_get("/models").await.unwrap();
    assert_eq!(
        state(&models, "other"),
        "unloaded",
        "refused without loading"
    );

    let allows_other = "name = \"tb2\"\n[models]\nallowed = [\"other\"]\n";
    assert_eq!(
        rt.deploy("tb2", allows_other, &g.testbed).await.unwrap().0,
        201
    );
    let (s, body) = chat_other("tb2").await;
    assert_eq!(s, 200, "{body}");
}
