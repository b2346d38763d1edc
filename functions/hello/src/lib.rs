//! The showcase function: greets, counts its invocations in kv and echoes the request.
//!
//! Build with `scripts/build-guests.sh`, then `fn deploy functions/hello` and
//! `curl -d '{"name": "Ada"}' localhost:8080/fn/hello/greet`.

use serde_json::{Value, json};
use slmfn_sdk::{Error, Request, Response, export_agent, kv};

fn handle(req: Request) -> Result<Response, Error> {
    let count = kv::increment("count", 1)?;
    // The `name` of a JSON body, else the `name` query parameter, else "world".
    let name = req
        .json::<Value>()
        .ok()
        .and_then(|body| body.get("name")?.as_str().map(str::to_owned))
        .or_else(|| req.query_param("name"))
        .unwrap_or_else(|| "world".to_owned());
    Response::json(&json!({
        "greeting": format!("Hello, {name}!"),
        "count": count,
        "method": req.method,
        "path": req.path,
        "echo": req.text()?,
    }))
}

export_agent!(handle);
