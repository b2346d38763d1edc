//! A tool component (`kind = "tool"`): the support desk's ticket store in this function's kv,
//! seeded with the sample tickets of `tickets.json` on first use.
//!
//! Deployed as `tickets`, its tools are `tickets.get` and `tickets.update_status`; an agent
//! sees them when its fn.toml grants `tickets.*` (functions/support-desk does).

use serde::{Deserialize, Serialize};
use slmfn_sdk::export_tools;
use slmfn_sdk::kv;
use slmfn_sdk::provider::{Tool, ToolError, ToolResult, arguments, tool};

/// The sample tickets.
const SEED: &str = include_str!("../tickets.json");

#[derive(Serialize, Deserialize)]
struct Ticket {
    id: u32,
    customer: String,
    subject: String,
    status: String,
    updated: String,
    note: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Get {
    /// The ticket number, e.g. 4412.
    id: u32,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct UpdateStatus {
    /// The ticket number.
    id: u32,
    /// The new status, e.g. "closed".
    status: String,
}

fn tools() -> Vec<Tool> {
    vec![
        tool::<Get>(
            "get",
            "Looks up a support ticket by its number: its status, subject and latest note.",
        ),
        tool::<UpdateStatus>("update_status", "Sets the status of a support ticket."),
    ]
}

fn failed(e: kv::Error) -> ToolError {
    ToolError::Failed(format!("ticket store: {e:?}"))
}

fn key(id: u32) -> String {
    format!("ticket/{id}")
}

/// Writes the sample tickets once.
fn seed() -> Result<(), ToolError> {
    if kv::get("seeded").map_err(failed)?.is_some() {
        return Ok(());
    }
    let tickets: Vec<Ticket> =
        serde_json::from_str(SEED).map_err(|e| ToolError::Failed(e.to_string()))?;
    for t in &tickets {
        let value = serde_json::to_vec(t).map_err(|e| ToolError::Failed(e.to_string()))?;
        kv::set(&key(t.id), &value).map_err(failed)?;
    }
    kv::set("seeded", b"1").map_err(failed)
}

fn load(id: u32) -> Result<Option<Ticket>, ToolError> {
    seed()?;
    match kv::get(&key(id)).map_err(failed)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ToolError::Failed(e.to_string())),
    }
}

/// A ticket as the model reads it: one sentence, status first.
fn describe(t: &Ticket) -> ToolResult {
    let mut result = ToolResult::json(t);
    result.content = vec![slmfn_sdk::provider::Content::Text(format!(
        "Ticket {}: the status is {}. Subject: {}. Last update {}: {}",
        t.id, t.status, t.subject, t.updated, t.note
    ))];
    result
}

fn call(name: &str, args: &str) -> Result<ToolResult, ToolError> {
    match name {
        "get" => {
            let Get { id } = arguments(args)?;
            Ok(match load(id)? {
                Some(t) => describe(&t),
                None => ToolResult::error(format!("There is no ticket {id}.")),
            })
        }
        "update_status" => {
            let UpdateStatus { id, status } = arguments(args)?;
            let Some(mut t) = load(id)? else {
                return Ok(ToolResult::error(format!("There is no ticket {id}.")));
            };
            t.status = status;
            let value = serde_json::to_vec(&t).map_err(|e| ToolError::Failed(e.to_string()))?;
            kv::set(&key(id), &value).map_err(failed)?;
            Ok(describe(&t))
        }
        other => Err(ToolError::NotFound(format!(
            "tickets has no tool {other:?}"
        ))),
    }
}

export_tools!(list = tools, call = call);
