//! A support-desk agent: answers a customer's question after looking it up — a ticket in the
//! ticket store (`tickets.get`, the `functions/tickets` tool component) or the FAQ
//! (`faq.search`, a local tool: embeddings of the shipped `faq.json` with the runtime's
//! embedding model).
//!
//! Run with `fn deploy --path functions/tickets`, `fn deploy --path functions/support-desk`
//! and `fn invoke support-desk --data '{"question": "What is the status of ticket 4412?"}'`.
//! Optional fields: `max_tokens`, `max_steps` (default 2: one lookup, one answer).

use serde::Deserialize;
use serde_json::json;
use slmfn_sdk::agent::Agent;
use slmfn_sdk::inference::{self, Params, ToolChoice};
use slmfn_sdk::provider::{ToolResult, arguments, tool};
use slmfn_sdk::tools::ToolError;
use slmfn_sdk::{Error, Request, Response, export_agent, kv};

const SYSTEM: &str = "You are a concise, friendly customer-support assistant. \
Look the question up first: tickets.get for a ticket number, faq.search for anything else. \
Then answer the customer in one or two sentences with what the lookup returned.";

/// The FAQ the `faq.search` tool searches.
const FAQ: &str = include_str!("../faq.json");

#[derive(Deserialize)]
struct Question {
    question: String,
    max_tokens: Option<u32>,
    max_steps: Option<u32>,
}

#[derive(Deserialize)]
struct Entry {
    q: String,
    a: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Search {
    /// What the customer asks about, in their words.
    query: String,
}

fn handle(req: Request) -> Result<Response, Error> {
    let q: Question = req.json()?;
    if q.question.trim().is_empty() {
        return Err(Error::bad_request("`question` is empty"));
    }
    let params = Params {
        max_tokens: Some(q.max_tokens.unwrap_or(96)),
        temperature: Some(0.0),
        ..Params::default()
    };
    let run = Agent::new(SYSTEM)
        .granted_tools()?
        .local_tool(
            tool::<Search>(
                "faq.search",
                "Searches the help-center FAQ: how-to questions about accounts, orders, refunds, returns and shipping.",
            ),
            faq_search,
        )
        .first_choice(first_choice(&q.question))
        .max_steps(q.max_steps.unwrap_or(2))
        .params(params)
        .run(&q.question)?;
    let calls: Vec<_> = run
        .calls()
        .map(|c| {
            json!({
                "name": c.call.name,
                "arguments": serde_json::from_str::<serde_json::Value>(&c.call.arguments).unwrap_or_default(),
                "result": match &c.result {
                    Ok(r) => json!(r.to_text()),
                    Err(e) => json!(format!("error: {e:?}")),
                },
            })
        })
        .collect();
    Response::json(&json!({
        "answer": run.answer,
        "stop": run.stop.as_str(),
        "tool_calls": calls,
        "usage": {
            "prompt_tokens": run.usage.prompt_tokens,
            "completion_tokens": run.usage.completion_tokens,
            "duration_ms": run.usage.duration_ms,
        },
    }))
}

/// The first step's tool choice. A question with a ticket number in it looks the ticket up
/// (a 135M model asked to choose between a lookup by number and a free-text search often
/// picks the search); any other question gets the model's choice among the tools it can call
/// with the question's words (the runtime drops `tickets.get` when no number is written).
fn first_choice(question: &str) -> ToolChoice {
    let has_number = question
        .split(|c: char| !c.is_ascii_digit())
        .any(|digits| digits.len() >= 3);
    if has_number {
        ToolChoice::Function("tickets.get".into())
    } else {
        ToolChoice::Required
    }
}

/// The FAQ entry closest to the query (cosine similarity of MiniLM embeddings); the
/// entries' vectors are computed once and kept in kv.
fn faq_search(args: &str) -> Result<ToolResult, ToolError> {
    let Search { query } = arguments(args)?;
    let entries: Vec<Entry> =
        serde_json::from_str(FAQ).map_err(|e| ToolError::Failed(e.to_string()))?;
    let vectors = faq_vectors(&entries)?;
    let asked = inference::embed(&[query], None)
        .map_err(|e| ToolError::Failed(format!("embedding the query: {e:?}")))?;
    let asked = asked
        .first()
        .ok_or_else(|| ToolError::Failed("no embedding".into()))?;
    let mut ranked: Vec<(f32, &Entry)> = vectors
        .iter()
        .map(|v| cosine(asked, v))
        .zip(&entries)
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    // The best entry only: a second, less relevant one confuses a small model.
    let (_, best) = ranked
        .first()
        .ok_or_else(|| ToolError::Failed("the FAQ is empty".into()))?;
    Ok(ToolResult::text(format!("FAQ \"{}\": {}", best.q, best.a)))
}

fn faq_vectors(entries: &[Entry]) -> Result<Vec<Vec<f32>>, ToolError> {
    let key = format!("faq-vectors/{}", FAQ.len());
    if let Ok(Some(bytes)) = kv::get(&key)
        && let Ok(vectors) = serde_json::from_slice::<Vec<Vec<f32>>>(&bytes)
        && vectors.len() == entries.len()
    {
        return Ok(vectors);
    }
    let questions: Vec<String> = entries.iter().map(|e| e.q.clone()).collect();
    let vectors = inference::embed(&questions, None)
        .map_err(|e| ToolError::Failed(format!("embedding the FAQ: {e:?}")))?;
    if let Ok(bytes) = serde_json::to_vec(&vectors) {
        // A cache: failing to store it only costs the next call the embedding again.
        let _ = kv::set(&key, &bytes);
    }
    Ok(vectors)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::EPSILON)
}

export_agent!(handle);
