//! `POST /v1/chat/completions` and `POST /v1/completions`: one generation each, answered whole
//! or streamed as server-sent events (`data: {chunk}` lines, then `data: [DONE]`).
//!
//! A stream's headers go out only once the first text arrives (or the generation ends), so
//! errors that come before any text — a context overflow, a failed load — still get their
//! status. Errors after that arrive as a last `data: {"error": {...}}` event, which OpenAI's
//! clients raise.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use slmfn_models::{Completion, FinishReason};

use super::responses::{
    AssistantMessage, Choice, CompletionObject, Delta, ToolCallObject, UsageObject,
};
use super::tools::Tools;
use super::wire::{ChatRequest, CompletionRequest, Plan, Sampling};
use super::{
    GENERATION_TIMEOUT, OpenAiJson, cancelled, model_error, resolve_model, service, unix_now,
};
use crate::inference::{Generation, ModelError, SamplingOverrides};
use crate::server::AppState;
use crate::server::error::ApiError;

/// Which endpoint: they differ only in their JSON shapes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Chat,
    Text,
}

/// What every response of one request carries.
struct Answer {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    /// Set when the answer may be a tool call.
    tools: Option<Tools>,
}

pub(in crate::server) async fn chat(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let request = Request {
        model: req.model.as_deref(),
        plan: req.plan(),
        sampling: &req.sampling,
        max_tokens: req.max_completion_tokens,
    };
    run(&state, Kind::Chat, request).await
}

pub(in crate::server) async fn completions(
    State(state): State<AppState>,
    OpenAiJson(req): OpenAiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let plan = req.check_unsupported().and_then(|()| req.prompt());
    let request = Request {
        model: req.model.as_deref(),
        plan: plan.map(|prompt| Plan {
            prompt,
            grammar: None,
            tools: None,
        }),
        sampling: &req.sampling,
        max_tokens: None,
    };
    run(&state, Kind::Text, request).await
}

/// What both endpoints ask of the pool, each part checked in [`run`]'s order.
struct Request<'a> {
    model: Option<&'a str>,
    plan: Result<Plan, ApiError>,
    sampling: &'a Sampling,
    /// The request's token bound besides `max_tokens` (chat's `max_completion_tokens`).
    max_tokens: Option<u64>,
}

async fn run(state: &AppState, kind: Kind, req: Request<'_>) -> Result<Response, ApiError> {
    // The model first: an unknown model is 404 whatever else is wrong.
    let inference = service(state)?;
    let model = resolve_model(inference, req.model)?;
    let Plan {
        mut prompt,
        grammar,
        tools,
    } = req.plan?;
    inference.route(None, &mut prompt).await;
    let sampling = req.sampling;
    let overrides = SamplingOverrides {
        grammar,
        ..sampling.overrides(req.max_tokens)?
    };
    let params = inference
        .sampling(&model, &overrides)
        .map_err(model_error)?;
    let generation = inference
        .start(
            &model,
            // The API's callers share one prompt-cache scope (functions have their own).
            "/v1",
            prompt,
            params,
            Some(Instant::now() + GENERATION_TIMEOUT),
        )
        .map_err(model_error)?;
    let answer = Answer {
        kind,
        id: format!(
            "{}-{}",
            match kind {
                Kind::Chat => "chatcmpl",
                Kind::Text => "cmpl",
            },
            uuid::Uuid::new_v4().simple()
        ),
        created: unix_now(),
        model,
        tools,
    };
    if sampling.stream() {
        stream(answer, generation, sampling.include_usage()).await
    } else {
        whole(answer, generation).await
    }
}

/// Waits for the whole completion. If the client goes away meanwhile, axum drops this future
/// and with it the generation, which cancels it.
async fn whole(answer: Answer, mut generation: Generation) -> Result<Response, ApiError> {
    let completion = generation.finish().await.map_err(model_error)?;
    let finish_reason = finish_reason(&completion, &generation)?;
    let calls = Some(&completion.tool_calls).filter(|c| answer.tools.is_some() && !c.is_empty());
    let choice = match (answer.kind, calls) {
        (Kind::Chat, Some(calls)) => Choice::message(
            AssistantMessage {
                role: "assistant",
                content: None,
                refusal: None,
                tool_calls: Some(calls.iter().map(|c| ToolCallObject::new(c, None)).collect()),
            },
            "tool_calls",
        ),
        (Kind::Chat, None) => Choice::message(
            AssistantMessage {
                role: "assistant",
                content: Some(completion.text.clone()),
                refusal: None,
                tool_calls: None,
            },
            finish_reason,
        ),
        (Kind::Text, _) => Choice::text(completion.text.clone(), Some(finish_reason)),
    };
    Ok(Json(CompletionObject {
        id: &answer.id,
        object: match answer.kind {
            Kind::Chat => "chat.completion",
            Kind::Text => "text_completion",
        },
        created: answer.created,
        model: &answer.model,
        system_fingerprint: None,
        choices: vec![choice],
        usage: Some(UsageObject::generation(&completion.usage)),
    })
    .into_response())
}

/// OpenAI's `finish_reason`, or the error for a generation cut short.
fn finish_reason(
    completion: &Completion,
    generation: &Generation,
) -> Result<&'static str, ApiError> {
    match completion.finish_reason {
        FinishReason::Cancelled => Err(cancelled(generation)),
        reason => Ok(reason.as_str()),
    }
}

async fn stream(
    answer: Answer,
    mut generation: Generation,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let first = generation.next_chunk().await;
    let held = answer.tools.as_ref().map(|_| String::new());
    let mut streamer = Streamer {
        answer,
        generation,
        include_usage,
        queue: VecDeque::new(),
        over: false,
        held,
    };
    if let Kind::Chat = streamer.answer.kind {
        let role = streamer.chunk(Choice::delta(
            Delta {
                role: Some("assistant"),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        ));
        streamer.queue.push_back(role);
    }
    match first {
        Some(text) => streamer.push_text(&text),
        None => {
            // Over before any text: errors still get their HTTP status.
            let result = streamer.generation.finish().await;
            let completion = result.map_err(model_error)?;
            finish_reason(&completion, &streamer.generation)?;
            streamer.end(Ok(completion));
        }
    }
    let events = futures::stream::unfold(streamer, |mut s| async move {
        let event = s.next_event().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The events of one streamed answer. It owns the generation: when the client disconnects,
/// axum drops the body, this, and the generation, which cancels it.
struct Streamer {
    answer: Answer,
    generation: Generation,
    include_usage: bool,
    /// Events ready to send.
    queue: VecDeque<Event>,
    /// The generation's outcome has been queued; nothing follows the queue.
    over: bool,
    /// With tools: the text held back while it may be a tool call (`None` once it is known
    /// to be text, which then streams).
    held: Option<String>,
}

impl Streamer {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.over {
                return None;
            }
            match self.generation.next_chunk().await {
                Some(text) if text.is_empty() => {}
                Some(text) => self.push_text(&text),
                None => {
                    let result = self.generation.finish().await;
                    self.end(result);
                }
            }
        }
    }

    /// Queues the last events: the finish chunk, the usage chunk if asked for, `[DONE]`; or
    /// an error event.
    fn end(&mut self, result: Result<Completion, ModelError>) {
        self.over = true;
        let completion = match result {
            Ok(c) => c,
            Err(e) => return self.queue.push_back(error_event(model_error(e))),
        };
        let mut reason = match finish_reason(&completion, &self.generation) {
            Ok(r) => r,
            Err(e) => return self.queue.push_back(error_event(e)),
        };
        // A held answer is a whole call (one chunk, as OpenAI's deltas add up to) or text.
        if let Some(held) = self.held.take().filter(|h| !h.is_empty()) {
            match Some(&completion.tool_calls).filter(|c| !c.is_empty()) {
                Some(calls) => {
                    let deltas = calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ToolCallObject::new(c, Some(i)))
                        .collect();
                    let chunk = self.chunk(Choice::delta(
                        Delta {
                            tool_calls: Some(deltas),
                            ..Delta::default()
                        },
                        None,
                    ));
                    self.queue.push_back(chunk);
                    reason = "tool_calls";
                }
                None => {
                    let chunk = self.content(&held);
                    self.queue.push_back(chunk);
                }
            }
        }
        let last = match self.answer.kind {
            Kind::Chat => self.chunk(Choice::delta(Delta::default(), Some(reason))),
            Kind::Text => self.chunk(Choice::text(String::new(), Some(reason))),
        };
        self.queue.push_back(last);
        if self.include_usage {
            // OpenAI's shape: one more chunk, with no choices and the whole request's usage.
            let body = self.envelope(Vec::new(), Some(UsageObject::generation(&completion.usage)));
            self.queue.push_back(data(&body));
        }
        self.queue.push_back(Event::default().data("[DONE]"));
    }

    /// Queues generated text, or holds it while it may be a tool call (it starts with `{`).
    fn push_text(&mut self, text: &str) {
        let Some(held) = &mut self.held else {
            let chunk = self.content(text);
            return self.queue.push_back(chunk);
        };
        held.push_str(text);
        // A call opens with `{` (or a tag such as `<tool_call>`, in the model's own format).
        match held.trim_start().chars().next() {
            None | Some('{' | '<') => {}
            Some(_) => {
                let text = std::mem::take(held);
                self.held = None;
                let chunk = self.content(&text);
                self.queue.push_back(chunk);
            }
        }
    }

    fn content(&self, text: &str) -> Event {
        self.chunk(match self.answer.kind {
            Kind::Chat => Choice::delta(
                Delta {
                    content: Some(text.to_string()),
                    ..Delta::default()
                },
                None,
            ),
            Kind::Text => Choice::text(text.to_string(), None),
        })
    }

    /// A chunk with one choice: a chat `delta` or a completion's `text`.
    fn chunk(&self, choice: Choice) -> Event {
        data(&self.envelope(vec![choice], None))
    }

    fn envelope(&self, choices: Vec<Choice>, usage: Option<UsageObject>) -> CompletionObject<'_> {
        CompletionObject {
            id: &self.answer.id,
            object: match self.answer.kind {
                Kind::Chat => "chat.completion.chunk",
                Kind::Text => "text_completion",
            },
            created: self.answer.created,
            model: &self.answer.model,
            system_fingerprint: None,
            choices,
            usage,
        }
    }
}

fn data(body: &impl serde::Serialize) -> Event {
    Event::default().data(serde_json::to_string(body).unwrap_or_default())
}

/// An error after the stream started: OpenAI's error object as the last event.
fn error_event(e: ApiError) -> Event {
    if e.status().is_server_error() {
        tracing::warn!(status = e.status().as_u16(), error = ?e, "stream failed");
    }
    data(&e.body())
}
