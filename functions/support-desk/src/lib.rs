//! A support-desk agent: answers a customer's question with the runtime's model.
//!
//! Run with `fn deploy --path functions/support-desk` and
//! `fn invoke support-desk --data '{"question": "How do I reset my password?"}'`.
//! Optional fields: `max_tokens`, `temperature` (default 0: greedy, reproducible answers).

use serde::Deserialize;
use serde_json::json;
use slmfn_sdk::inference::{self, Message, Params};
use slmfn_sdk::{Error, Request, Response, export_agent, kv};

const SYSTEM: &str = "You are a concise, friendly customer-support assistant. \
Answer the customer's question in one or two sentences.";

#[derive(Deserialize)]
struct Question {
    question: String,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

fn handle(req: Request) -> Result<Response, Error> {
    let q: Question = req.json()?;
    if q.question.trim().is_empty() {
        return Err(Error::bad_request("`question` is empty"));
    }
    let params = Params {
        max_tokens: Some(q.max_tokens.unwrap_or(96)),
        temperature: Some(q.temperature.unwrap_or(0.0)),
        ..Params::default()
    };
    let messages = [Message::system(SYSTEM), Message::user(q.question)];
    let answer = inference::chat_with(&messages, &params)?;
    let tickets = kv::increment("tickets", 1)?;
    Response::json(&json!({
        "answer": answer.text.trim(),
        "finish_reason": answer.finish_reason,
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
            "duration_ms": answer.usage.duration_ms,
        },
        "ticket": tickets,
    }))
}

export_agent!(handle);
