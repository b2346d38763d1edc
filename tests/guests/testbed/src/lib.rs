//! Test fixture for the runtime's end-to-end tests: one route per behaviour under test.
//!
//! Routes (the path after `/fn/{name}`; any method):
//!
//! | path | answer |
//! |---|---|
//! | `/echo` | 200, the request body as-is, no headers |
//! | `/request` | 200 JSON `{"method", "path", "query", "headers": [[name, value]...], "body_len"}` |
//! | `/status?code=N` | status N, header `x-testbed: status`, body `status N` |
//! | `/loop` | never answers: spins forever (deadline, fuel and epoch tests) |
//! | `/alloc` | allocates and touches 1 MiB blocks until memory runs out (trap) |
//! | `/panic` | panics with `testbed panic` (trap) |
//! | `/overflow` | unbounded recursion until the stack overflows (trap) |
//! | `/sleep?ms=N` | sleeps N ms, then 200 JSON `{"slept_ms": N}` |
//! | `/wait?key=K` | polls kv key K every 5 ms until it exists (a barrier the test releases), then 200 JSON `{"version": VERSION}`; bounded by the function's timeout |
//! | `/env?key=K` | 200 text: the value of env var K; 404 when unset |
//! | `/version` | 200 text: env var `VERSION` (redeploy tests); 404 when unset |
//! | `/kv/incr?key=K` | 200 JSON number: the counter K after adding 1 |
//! | `/kv/get?key=K` | 200, the raw value of K; 404 when absent |
//! | `/kv/set?key=K` | 204 after storing the request body under K |
//! | `/kv/delete?key=K` | 204 after deleting K |
//! | `/kv/list?prefix=P` | 200 JSON: `kv::list_keys(P)` |
//! | `/kv/page?prefix=P&limit=N[&after=A]` | 200 JSON `{"keys", "next"}`: `kv::list_keys_page(P, A, N)` |
//! | `/sandbox` | 200 JSON `{"read", "write", "list", "connect"}`: the error text (or `null` on success) of reading `/etc/passwd`, writing `probe.txt`, listing `/` and a TCP connect to 127.0.0.1:9 |
//! | `/log?msg=M` | writes `stdout M` to stdout and `INFO stderr M` to stderr, then 204 |
//! | `/error/bad` | guest error `bad-request("bad input")` (400) |
//! | `/error/internal` | guest error `internal("it broke")` (500) |
//! | `/chat` | body `{"prompt", "model"?, "max_tokens"?, "stream"?}`: greedy chat with the model; 200 JSON `{"text", "finish_reason", "chunks"}`; inference errors as the SDK maps them (overloaded: 429) |
//! | `/embed` | body `{"texts": [...], "model"?}`: `inference::embed`; 200 JSON `{"vectors": [[...]...]}`; inference errors as the SDK maps them |
//! | `/tools/list` | 200 JSON `{"ok": [{"name", "description", "input_schema"}...]}` or `{"error": {"kind", "message"}}` |
//! | `/tools/call` | body `{"name", "arguments"}` (arguments: any JSON, sent as its text; a string is sent as-is): 200 JSON `{"ok": {"content": [...], "structured", "is_error"}}` or `{"error": {"kind", "message"}}` |
//! | `/tools/bench` | body `{"name", "arguments", "n"}`: calls the tool n times (after 10 unmeasured), timing each call in the guest; 200 JSON `{"n", "p50_us", "p90_us", "mean_us", "errors"}` |
//! | `/agent` | body `{"system", "question", "max_steps"?, "first"?: "auto"/"required", "max_tokens"?}`: the SDK agent loop with the granted tools, greedy; 200 JSON `{"answer", "stop", "steps", "calls": [{"name", "arguments", "result"/"error"}]}` |
//! | anything else | guest error `not-found` (404) |
//!
//! Missing or malformed query parameters are `bad-request` (400).
//!
//! Events (`on_event`, by the event's `type`):
//!
//! | type | answer |
//! |---|---|
//! | `testbed.error` | guest error `bad-request("bad event")` |
//! | `testbed.internal` | guest error `internal("event handler broke")` |
//! | `testbed.overloaded` | guest error `overloaded(1500)` |
//! | `testbed.trap` / `testbed.loop` | panics / spins forever |
//! | `testbed.noreply` | no reply |
//! | `testbed.badreply` | a reply with an empty id (invalid) |
//! | `testbed.count` | kv counter `events.count` + 1; reply `testbed.counted`, data: the count |
//! | `testbed.sleep` | data: ms to sleep (printing `testbed event {id} sleeping {ms} ms` first); then counter `events.slept` + 1; reply `testbed.slept`, data: the count |
//! | `testbed.emit` | emits `{id}-emitted` (`testbed.emitted`, the data as text) to the sink; reply `testbed.emit.result`, data `{"emitted": true}` or `{"error": kind, "message"}` |
//! | anything else | reply `{id}-reply`, source `/testbed`, type `{type}.reply`, every other attribute, extension and the data copied, plus the extension `testbedversion` = env `VERSION` when set |

use std::hint::black_box;

use serde_json::json;
use slmfn_sdk::inference::{self, Message, Params, ResponseFormat, ToolCall, ToolChoice, Turn};
use slmfn_sdk::{CloudEvent, Error, Request, Response, export_agent, kv, log};

fn handle(req: Request) -> Result<Response, Error> {
    match req.path.as_str() {
        "/echo" => Ok(Response::new(200, req.body)),
        "/request" => describe(&req),
        "/status" => {
            let code = param::<u16>(&req, "code")?;
            Ok(Response::new(code, format!("status {code}")).with_header("x-testbed", "status"))
        }
        "/loop" => spin(),
        "/alloc" => exhaust_memory(),
        "/panic" => panic!("testbed panic"),
        "/overflow" => {
            let depth = recurse(0);
            Err(Error::internal(format!("recursion ended at depth {depth}")))
        }
        "/sleep" => {
            let ms = param::<u64>(&req, "ms")?;
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::json(&json!({ "slept_ms": ms }))
        }
        "/wait" => {
            let key = param::<String>(&req, "key")?;
            while kv::get(&key)?.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Response::json(&json!({ "version": std::env::var("VERSION").ok() }))
        }
        "/env" => env(&param::<String>(&req, "key")?),
        "/sandbox" => sandbox(),
        "/version" => env("VERSION"),
        "/kv/incr" => Response::json(&kv::increment(&param::<String>(&req, "key")?, 1)?),
        "/kv/get" => {
            let key = param::<String>(&req, "key")?;
            match kv::get(&key)? {
                Some(value) => Ok(Response::new(200, value)),
                None => Err(Error::not_found(format!("no key {key:?}"))),
            }
        }
        "/kv/set" => {
            kv::set(&param::<String>(&req, "key")?, &req.body)?;
            Ok(Response::new(204, Vec::new()))
        }
        "/kv/delete" => {
            kv::delete(&param::<String>(&req, "key")?)?;
            Ok(Response::new(204, Vec::new()))
        }
        "/kv/list" => Response::json(&kv::list_keys(&param::<String>(&req, "prefix")?)?),
        "/kv/page" => {
            let after = req.query_param("after");
            let page = kv::list_keys_page(
                &param::<String>(&req, "prefix")?,
                after.as_deref(),
                param::<u32>(&req, "limit")?,
            )?;
            Response::json(&json!({ "keys": page.keys, "next": page.next }))
        }
        "/log" => {
            let msg = param::<String>(&req, "msg")?;
            println!("stdout {msg}");
            log::info(format_args!("stderr {msg}"));
            Ok(Response::new(204, Vec::new()))
        }
        "/error/bad" => Err(Error::bad_request("bad input")),
        "/error/internal" => Err(Error::internal("it broke")),
        "/chat" => chat(&req),
        "/embed" => embed(&req),
        "/tools/chat" => tool_chat(&req),
        "/json" => typed_json(&req),
        "/tools/list" => tools_list(),
        "/tools/call" => tools_call(&req),
        "/tools/bench" => tools_bench(&req),
        "/agent" => agent(&req),
        path => Err(Error::not_found(format!("testbed has no route {path}"))),
    }
}

fn on_event(event: CloudEvent) -> Result<Option<CloudEvent>, Error> {
    let data_text =
        || String::from_utf8_lossy(event.data.as_deref().unwrap_or_default()).into_owned();
    match event.type_.as_str() {
        "testbed.error" => return Err(Error::bad_request("bad event")),
        "testbed.internal" => return Err(Error::internal("event handler broke")),
        "testbed.overloaded" => return Err(Error::Overloaded(1500)),
        "testbed.trap" => panic!("testbed event panic"),
        "testbed.loop" => spin(),
        "testbed.noreply" => return Ok(None),
        "testbed.badreply" => return Ok(Some(CloudEvent::new("", "/testbed", "x"))),
        "testbed.count" => {
            let n = kv::increment("events.count", 1)?;
            let reply =
                CloudEvent::new(format!("{}-reply", event.id), "/testbed", "testbed.counted");
            return Ok(Some(reply.with_data("application/json", n.to_string())));
        }
        "testbed.sleep" => {
            let ms: u64 = data_text()
                .trim()
                .parse()
                .map_err(|_| Error::bad_request("data: milliseconds"))?;
            println!("testbed event {} sleeping {ms} ms", event.id);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let n = kv::increment("events.slept", 1)?;
            let reply = CloudEvent::new(format!("{}-reply", event.id), "/testbed", "testbed.slept");
            return Ok(Some(reply.with_data("application/json", n.to_string())));
        }
        "testbed.emit" => {
            let out = CloudEvent::new(
                format!("{}-emitted", event.id),
                "/testbed",
                "testbed.emitted",
            )
            .with_data("text/plain", data_text());
            let result = match slmfn_sdk::events::emit(&out) {
                Ok(()) => json!({ "emitted": true }),
                Err(e) => {
                    let (kind, message) = match e {
                        slmfn_sdk::events::Error::NoSink => ("no-sink", String::new()),
                        slmfn_sdk::events::Error::Invalid(m) => ("invalid", m),
                        slmfn_sdk::events::Error::Unavailable(m) => ("unavailable", m),
                        slmfn_sdk::events::Error::Delivery(m) => ("delivery", m),
                    };
                    json!({ "error": kind, "message": message })
                }
            };
            let reply = CloudEvent::new(
                format!("{}-reply", event.id),
                "/testbed",
                "testbed.emit.result",
            );
            return Ok(Some(
                reply.with_data("application/json", result.to_string()),
            ));
        }
        _ => {}
    }
    // Everything else: echoed with every attribute but id, source and type.
    let mut reply = CloudEvent::new(
        format!("{}-reply", event.id),
        "/testbed",
        format!("{}.reply", event.type_),
    );
    reply.datacontenttype = event.datacontenttype;
    reply.dataschema = event.dataschema;
    reply.subject = event.subject;
    reply.time = event.time;
    reply.extensions = event.extensions;
    if let Ok(version) = std::env::var("VERSION") {
        reply.extensions.push(("testbedversion".into(), version));
    }
    reply.data = event.data;
    Ok(Some(reply))
}

export_agent!(handle, on_event = on_event);

/// A query parameter parsed as `T`; absent or malformed is a bad request.
fn param<T: std::str::FromStr>(req: &Request, name: &str) -> Result<T, Error> {
    let raw = req
        .query_param(name)
        .ok_or_else(|| Error::bad_request(format!("missing query parameter {name}")))?;
    raw.parse()
        .map_err(|_| Error::bad_request(format!("malformed query parameter {name}={raw}")))
}

fn describe(req: &Request) -> Result<Response, Error> {
    let headers: Vec<_> = req
        .headers
        .iter()
        .map(|(name, value)| [name.clone(), String::from_utf8_lossy(value).into_owned()])
        .collect();
    Response::json(&json!({
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "headers": headers,
        "body_len": req.body.len(),
    }))
}

/// What the guest can reach outside itself: each probe's error, `null` where it succeeded.
fn sandbox() -> Result<Response, Error> {
    let outcome = |r: std::io::Result<()>| r.err().map(|e| e.to_string());
    Response::json(&json!({
        "read": outcome(std::fs::read("/etc/passwd").map(drop)),
        "write": outcome(std::fs::write("probe.txt", b"x")),
        "list": outcome(std::fs::read_dir("/").map(drop)),
        "connect": outcome(std::net::TcpStream::connect("127.0.0.1:9").map(drop)),
    }))
}

fn env(key: &str) -> Result<Response, Error> {
    std::env::var(key)
        .map(Response::text)
        .map_err(|_| Error::not_found(format!("no env var {key}")))
}

/// Busy loop; `black_box` keeps the optimiser from proving it side-effect free.
fn spin() -> ! {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Grows the heap 1 MiB at a time until an allocation fails, which aborts (a trap). Every
/// page is written so that the memory is really committed, not just reserved.
fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        blocks.push(black_box(block));
    }
}

/// Recursion that never ends in practice. The call goes through a `black_box`ed function
/// pointer and its result is used after the call, so neither inlining nor tail calls nor
/// LLVM's accumulator transformation can turn it into a loop.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return depth;
    }
    let next: fn(u64) -> u64 = black_box(recurse);
    next(depth + 1).wrapping_mul(31).wrapping_add(depth)
}

/// Greedy chat through the runtime's model pool, whole or streamed.
fn chat(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let prompt = body["prompt"]
        .as_str()
        .ok_or_else(|| Error::bad_request("missing `prompt`"))?;
    // `json_schema` (a schema, as JSON), `json: true` or `grammar` (Lark): the response format.
    let response_format = if let Some(schema) = body.get("json_schema") {
        Some(ResponseFormat::JsonSchema(schema.to_string()))
    } else if let Some(lark) = body["grammar"].as_str() {
        Some(ResponseFormat::Grammar(lark.to_owned()))
    } else if body["json"].as_bool() == Some(true) {
        Some(ResponseFormat::Json)
    } else {
        None
    };
    let params = Params {
        model: body["model"].as_str().map(str::to_owned),
        max_tokens: body["max_tokens"].as_u64().map(|n| n as u32),
        temperature: Some(body["temperature"].as_f64().unwrap_or(0.0) as f32),
        seed: body["seed"].as_u64(),
        response_format,
        ..Params::default()
    };
    let messages = [Message::user(prompt)];
    if body["stream"].as_bool() == Some(true) {
        let stream = inference::chat_stream(&messages, &params)?;
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next()? {
            chunks.push(chunk);
        }
        let done = stream.finish()?;
        return Response::json(
            &json!({ "text": done.text, "finish_reason": done.finish_reason, "chunks": chunks }),
        );
    }
    let done = inference::chat_with(&messages, &params)?;
    Response::json(&json!({
        "text": done.text,
        "finish_reason": done.finish_reason,
        "chunks": [],
        "usage": {
            "prompt_tokens": done.usage.prompt_tokens,
            "completion_tokens": done.usage.completion_tokens,
        },
    }))
}

/// `inference.chat-with-tools`: the body's `turns` (role, content, optional `tool_calls`
/// and `tool_call_id`), `tools` (name, description, `input_schema` object), `choice` (`auto`,
/// `required` or a tool name), `max_tokens`, `temperature`, `seed`.
fn tool_chat(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let turns: Vec<Turn> = body["turns"]
        .as_array()
        .ok_or_else(|| Error::bad_request("missing `turns`"))?
        .iter()
        .map(|t| Turn {
            role: t["role"].as_str().unwrap_or_default().to_owned(),
            content: t["content"].as_str().unwrap_or_default().to_owned(),
            tool_calls: t["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_owned(),
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: c["arguments"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
            tool_call_id: t["tool_call_id"].as_str().map(str::to_owned),
        })
        .collect();
    let tools: Vec<slmfn_sdk::tools::Tool> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| slmfn_sdk::tools::Tool {
            name: t["name"].as_str().unwrap_or_default().to_owned(),
            description: t["description"].as_str().unwrap_or_default().to_owned(),
            input_schema: t["input_schema"].to_string(),
        })
        .collect();
    let choice = match body["choice"].as_str().unwrap_or("auto") {
        "auto" => ToolChoice::Auto,
        "required" => ToolChoice::Required,
        name => ToolChoice::Function(name.to_owned()),
    };
    let params = Params {
        max_tokens: body["max_tokens"].as_u64().map(|n| n as u32),
        temperature: Some(body["temperature"].as_f64().unwrap_or(0.0) as f32),
        seed: body["seed"].as_u64(),
        ..Params::default()
    };
    let done = inference::chat_with_tools(&turns, &tools, &choice, &params)?;
    let calls: Vec<serde_json::Value> = done
        .tool_calls
        .iter()
        .map(|c| json!({ "id": c.id, "name": c.name, "arguments": c.arguments }))
        .collect();
    Response::json(&json!({
        "text": done.text,
        "tool_calls": calls,
        "finish_reason": done.finish_reason,
    }))
}

/// The answer [`inference::chat_json`] parses into a Rust type.
#[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Verdict {
    label: Label,
    score: u8,
}

#[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Label {
    Good,
    Bad,
}

/// `inference::chat_json::<Verdict>` of the body's `prompt`, at the body's `temperature` and
/// `seed`.
fn typed_json(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let prompt = body["prompt"].as_str().unwrap_or("hello");
    let params = Params {
        max_tokens: Some(96),
        temperature: Some(body["temperature"].as_f64().unwrap_or(0.0) as f32),
        seed: body["seed"].as_u64(),
        ..Params::default()
    };
    let verdict: Verdict = inference::chat_json(&[Message::user(prompt)], &params)?;
    Response::json(&verdict)
}

/// Embeds the texts of the body through the runtime's model pool.
fn embed(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let texts: Vec<String> = body["texts"]
        .as_array()
        .ok_or_else(|| Error::bad_request("missing `texts`"))?
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::bad_request("`texts` must be strings"))?;
    let vectors = inference::embed(&texts, body["model"].as_str())?;
    Response::json(&json!({ "vectors": vectors }))
}

fn tool_error(e: &slmfn_sdk::tools::ToolError) -> serde_json::Value {
    use slmfn_sdk::tools::ToolError;
    let (kind, message) = match e {
        ToolError::NotFound(m) => ("not-found", m),
        ToolError::InvalidArguments(m) => ("invalid-arguments", m),
        ToolError::Unavailable(m) => ("unavailable", m),
        ToolError::Failed(m) => ("failed", m),
    };
    json!({"kind": kind, "message": message})
}

fn tool_result(r: &slmfn_sdk::tools::ToolResult) -> serde_json::Value {
    use slmfn_sdk::tools::Content;
    let content: Vec<serde_json::Value> = r
        .content
        .iter()
        .map(|c| match c {
            Content::Text(t) => json!({"type": "text", "text": t}),
            Content::Json(t) => json!({"type": "json", "json": t}),
        })
        .collect();
    let structured = r
        .structured
        .as_deref()
        .map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap_or(json!(s)));
    json!({"content": content, "structured": structured, "is_error": r.is_error})
}

fn tools_list() -> Result<Response, Error> {
    Response::json(&match slmfn_sdk::tools::list() {
        Ok(tools) => json!({"ok": tools.iter().map(|t| json!({
            "name": t.name,
            "description": t.description,
            "input_schema": serde_json::from_str::<serde_json::Value>(&t.input_schema).unwrap_or_default(),
        })).collect::<Vec<_>>()}),
        Err(e) => json!({"error": tool_error(&e)}),
    })
}

fn tools_call(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| Error::bad_request("missing `name`"))?;
    let arguments = match &body["arguments"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "{}".to_owned(),
        other => other.to_string(),
    };
    Response::json(&match slmfn_sdk::tools::call(name, &arguments) {
        Ok(r) => json!({"ok": tool_result(&r)}),
        Err(e) => json!({"error": tool_error(&e)}),
    })
}

fn agent(req: &Request) -> Result<Response, Error> {
    use slmfn_sdk::agent::Agent;
    let body: serde_json::Value = req.json()?;
    let first = match body["first"].as_str().unwrap_or("auto") {
        "required" => ToolChoice::Required,
        _ => ToolChoice::Auto,
    };
    let params = Params {
        max_tokens: Some(body["max_tokens"].as_u64().unwrap_or(96) as u32),
        temperature: Some(0.0),
        ..Params::default()
    };
    let run = Agent::new(
        body["system"]
            .as_str()
            .unwrap_or("You are a helpful assistant."),
    )
    .granted_tools()?
    .first_choice(first)
    .max_steps(body["max_steps"].as_u64().unwrap_or(3) as u32)
    .params(params)
    .run(body["question"].as_str().unwrap_or_default())?;
    let calls: Vec<serde_json::Value> = run
        .calls()
        .map(|c| {
            let mut call = json!({"name": c.call.name, "arguments": c.call.arguments});
            match &c.result {
                Ok(r) => call["result"] = tool_result(r),
                Err(e) => call["error"] = tool_error(e),
            }
            call
        })
        .collect();
    Response::json(&json!({
        "answer": run.answer,
        "stop": run.stop.as_str(),
        "steps": run.steps.len(),
        "calls": calls,
    }))
}

fn tools_bench(req: &Request) -> Result<Response, Error> {
    let body: serde_json::Value = req.json()?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| Error::bad_request("missing `name`"))?;
    let arguments = body["arguments"].to_string();
    let n = body["n"].as_u64().unwrap_or(1000).clamp(1, 100_000) as usize;
    let mut errors = 0;
    for _ in 0..10 {
        let _ = slmfn_sdk::tools::call(name, &arguments);
    }
    let mut micros: Vec<f64> = Vec::with_capacity(n);
    for _ in 0..n {
        let started = std::time::Instant::now();
        match slmfn_sdk::tools::call(name, &arguments) {
            Ok(r) if !r.is_error => {}
            _ => errors += 1,
        }
        micros.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let mean = micros.iter().sum::<f64>() / n as f64;
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((n as f64 * q) as usize).min(n - 1)];
    Response::json(&json!({
        "n": n, "p50_us": at(0.5), "p90_us": at(0.9), "mean_us": mean, "errors": errors,
    }))
}
