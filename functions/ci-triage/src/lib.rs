//! A CI/DevOps triage agent: given a CI log, answers the failing step, the likely cause and a
//! suggested fix as JSON, valid by construction.
//!
//! The failing step is read from the log (the `##[group]Run ...` step whose output holds the
//! first `##[error]`) and written into the answer as a constant of its JSON schema, so the
//! model never gets it wrong; the model writes the cause and the fix from an excerpt. A long
//! log is not given whole: the agent first calls `log.search` (a local tool over the log) and
//! reads what it found. Samples ship in `logs/`:
//! `fn invoke ci-triage --data '{"sample": "npm-404"}'`.
//!
//! Event-driven too: a `dev.ci.build.failed` CloudEvent (its `[[triggers]]` in fn.toml) with
//! the same JSON as data gets a `dev.ci.build.triaged` reply event carrying the answer:
//! `fn send --type dev.ci.build.failed --data '{"sample": "npm-404"}'`.

use serde::Deserialize;
use serde_json::{Value, json};
use slmfn_sdk::agent::Agent;
use slmfn_sdk::inference::{self, Message, Params, ResponseFormat, ToolChoice};
use slmfn_sdk::provider::{ToolResult, arguments, tool};
use slmfn_sdk::tools::ToolError;
use slmfn_sdk::{CloudEvent, Error, Request, Response, export_agent};

/// Logs longer than this many lines are searched, not read whole.
const LONG_LOG_LINES: usize = 40;

#[derive(Deserialize)]
struct Input {
    log: Option<String>,
    sample: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Search {
    /// A word or phrase to look for in the log, e.g. "error" or "FAILED".
    query: String,
}

fn sample(name: &str) -> Option<&'static str> {
    match name {
        "rust-test-failure" => Some(include_str!("../logs/rust-test-failure.log")),
        "npm-404" => Some(include_str!("../logs/npm-404.log")),
        "docker-oom" => Some(include_str!("../logs/docker-oom.log")),
        _ => None,
    }
}

fn handle(req: Request) -> Result<Response, Error> {
    Response::json(&triage(req.json()?)?)
}

/// A `dev.ci.build.failed` event (data: `{"log"}` or `{"sample"}`, as the HTTP body) gets a
/// `dev.ci.build.triaged` reply with the same answer as its data.
fn on_event(event: CloudEvent) -> Result<Option<CloudEvent>, Error> {
    if event.type_ != FAILED {
        return Err(Error::bad_request(format!(
            "ci-triage takes {FAILED} events, not {}",
            event.type_
        )));
    }
    let data = event.data.as_deref().unwrap_or_default();
    let input: Input =
        serde_json::from_slice(data).map_err(|e| Error::bad_request(format!("event data: {e}")))?;
    let answer = triage(input)?;
    let mut reply = CloudEvent::new(format!("{}-triage", event.id), "/fn/ci-triage", TRIAGED)
        .with_data("application/json", answer.to_string());
    reply.subject = event.subject;
    Ok(Some(reply))
}

/// The event type ci-triage subscribes to, and its reply's.
const FAILED: &str = "dev.ci.build.failed";
const TRIAGED: &str = "dev.ci.build.triaged";

fn triage(input: Input) -> Result<Value, Error> {
    let log = match (&input.log, &input.sample) {
        (Some(log), _) => log.clone(),
        (None, Some(name)) => sample(name)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "no sample {name:?}: use rust-test-failure, npm-404 or docker-oom"
                ))
            })?
            .to_string(),
        (None, None) => return Err(Error::bad_request("give `log` (the CI log) or `sample`")),
    };
    let failing_step = failing_step(&log);
    let (excerpt, searched) = if log.lines().count() > LONG_LOG_LINES {
        let found = search_with_the_model(&log)?;
        (found.clone(), Some(found))
    } else {
        (log.clone(), None)
    };
    let step_schema = match &failing_step {
        Some(step) => json!({"const": step}),
        None => json!({"type": "string", "maxLength": 80}),
    };
    let schema = json!({
        "type": "object",
        "properties": {
            "failing_step": step_schema,
            "likely_cause": prose(),
            "suggested_fix": prose(),
        },
        "required": ["failing_step", "likely_cause", "suggested_fix"],
        "additionalProperties": false,
    });
    // Room for the whole object at one character per token: a constrained answer is never cut.
    let params = Params {
        max_tokens: Some(400),
        temperature: Some(0.0),
        response_format: Some(ResponseFormat::JsonSchema(schema.to_string())),
        ..Params::default()
    };
    let messages = [
        Message::system(
            "You are a CI/DevOps engineer. Read the CI log excerpt and answer in JSON: the step \
             that failed, the likely cause of the failure, and a suggested fix.",
        ),
        Message::user(format!("CI log excerpt:\n{excerpt}")),
    ];
    let answer = inference::chat_with(&messages, &params)?;
    let triage: Value = serde_json::from_str(&answer.text).map_err(|e| {
        Error::internal(format!(
            "the model's answer is not complete JSON ({e}; finish reason {})",
            answer.finish_reason
        ))
    })?;
    Ok(json!({
        "triage": triage,
        "finish_reason": answer.finish_reason,
        "searched": searched,
    }))
}

/// A sentence: starts with a letter, words and punctuation, bounded (a small model left free
/// writes version-number soup).
fn prose() -> Value {
    json!({
        "type": "string",
        "minLength": 10,
        "maxLength": 120,
        "pattern": "^[A-Za-z][A-Za-z0-9 ,.;:'`()/@_-]*$",
    })
}

/// The `##[group]Run ...` step whose output holds the first `##[error]` line.
fn failing_step(log: &str) -> Option<String> {
    let mut step = None;
    for line in log.lines() {
        if let Some(name) = line.strip_prefix("##[group]Run ") {
            step = Some(name.trim().to_string());
        } else if line.starts_with("##[error]") {
            return step;
        }
    }
    None
}

/// Lines of `log` that contain `query` (case-insensitive), each with a line of context on
/// either side, at most 20.
fn search(log: &str, query: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let query = query.to_lowercase();
    let mut keep = vec![false; lines.len()];
    for (i, line) in lines.iter().enumerate() {
        if line.to_lowercase().contains(&query) {
            for k in keep.iter_mut().take(i + 2).skip(i.saturating_sub(1)) {
                *k = true;
            }
        }
    }
    let found: Vec<&str> = lines
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(l, _)| *l)
        .take(20)
        .collect();
    found.join("\n")
}

/// One agent step: the model picks what to search the long log for; when its query finds
/// nothing, the lines around errors and failures stand in.
fn search_with_the_model(log: &str) -> Result<String, Error> {
    let owned = log.to_string();
    let run = Agent::new("You find why CI builds fail. Search the log for the failure.")
        .local_tool(
            tool::<Search>(
                "log.search",
                "Searches the CI log for lines containing a word.",
            ),
            move |args| -> Result<ToolResult, ToolError> {
                let Search { query } = arguments(args)?;
                Ok(ToolResult::text(search(&owned, &query)))
            },
        )
        .first_choice(ToolChoice::Function("log.search".into()))
        .max_steps(1)
        .params(Params {
            max_tokens: Some(32),
            temperature: Some(0.0),
            ..Params::default()
        })
        .run("Search the CI log for the error or the failed test.")?;
    let found = run
        .calls()
        .filter_map(|c| c.result.as_ref().ok())
        .map(|r| r.to_text())
        .find(|t| !t.trim().is_empty());
    Ok(found.unwrap_or_else(|| {
        ["FAILED", "error", "panicked"]
            .iter()
            .map(|q| search(log, q))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }))
}

export_agent!(handle, on_event = on_event);
