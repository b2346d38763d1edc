//! Test fixture: a tool component. Deployed as `toolkit` its tools are `toolkit.{name}`:
//!
//! | tool | arguments | answer |
//! |---|---|---|
//! | `echo` | `{"text": string}` | the text |
//! | `add` | `{"a": integer, "b": integer}` | structured `{"sum"}`; counts its runs in kv `add_calls` |
//! | `stats` | `{}` | structured `{"add_calls"}`: how often `add` ran |
//! | `fail` | `{}` | a tool-reported error (`is-error`) `it failed` |
//! | `trap` | `{}` | panics (a trap) |
//! | `spin` | `{}` | loops forever (the deadline) |

use serde::Deserialize;
use serde_json::json;
use slmfn_sdk::export_tools;
use slmfn_sdk::kv;
use slmfn_sdk::provider::{Tool, ToolError, ToolResult, arguments, tool};

#[derive(Deserialize, schemars::JsonSchema)]
struct Echo {
    /// The text to answer.
    text: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Nothing {}

fn tools() -> Vec<Tool> {
    vec![
        tool::<Echo>("echo", "Answers the text it is given"),
        tool::<Add>("add", "Adds two integers"),
        tool::<Nothing>("stats", "How often add ran"),
        tool::<Nothing>("fail", "Always reports a failure"),
        tool::<Nothing>("trap", "Traps"),
        tool::<Nothing>("spin", "Never answers"),
    ]
}

fn kv_error(e: kv::Error) -> ToolError {
    ToolError::Failed(format!("{e:?}"))
}

fn call(name: &str, args: &str) -> Result<ToolResult, ToolError> {
    match name {
        "echo" => {
            let Echo { text } = arguments(args)?;
            Ok(ToolResult::text(text))
        }
        "add" => {
            let Add { a, b } = arguments(args)?;
            kv::increment("add_calls", 1).map_err(kv_error)?;
            Ok(ToolResult::json(&json!({"sum": a + b})))
        }
        "stats" => {
            let calls = kv::increment("add_calls", 0).map_err(kv_error)?;
            Ok(ToolResult::json(&json!({"add_calls": calls})))
        }
        "fail" => Ok(ToolResult::error("it failed")),
        "trap" => panic!("toolkit trap"),
        "spin" => spin(),
        other => Err(ToolError::NotFound(format!(
            "toolkit has no tool {other:?}"
        ))),
    }
}

fn spin() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

export_tools!(list = tools, call = call);
