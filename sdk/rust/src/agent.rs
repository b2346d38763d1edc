//! The agent loop: a model, a system prompt, tools and a step limit, in a few lines.
//!
//! Each step asks the model (through [`inference::chat_with_tools`], so a call is valid by
//! construction and names one of the offered tools) either to call tools or to answer. Calls
//! run — runtime tools through [`crate::tools::call`], local tools in the guest — and their
//! results go back as `tool` turns. The last step allowed answers in text (the tools stay
//! listed, so every step shares the system prompt and tool block as a cached prefix). With a
//! step limit of one, a step that calls tools ends the run at [`Stop::StepLimit`].
//!
//! # Examples
//!
//! ```no_run
//! use slmfn_sdk::agent::Agent;
//! use slmfn_sdk::inference::ToolChoice;
//!
//! # fn main() -> Result<(), slmfn_sdk::Error> {
//! let run = Agent::new("You answer questions about support tickets.")
//!     .granted_tools()?
//!     .first_choice(ToolChoice::Required)
//!     .max_steps(3)
//!     .run("What's the status of ticket 4412?")?;
//! println!("{} ({} steps)", run.answer.unwrap_or_default(), run.steps.len());
//! # Ok(())
//! # }
//! ```

use crate::inference::{self, Params, ResponseFormat, ToolCall, ToolChoice, Turn, Usage};
use crate::tools::{self, Tool, ToolError, ToolResult};

/// A tool that runs inside the guest (e.g. a search over data the component ships).
struct LocalTool {
    tool: Tool,
    run: Box<dyn Fn(&str) -> Result<ToolResult, ToolError>>,
}

/// An agent: what the loop needs to run (see the module docs).
pub struct Agent {
    system: String,
    tools: Vec<Tool>,
    local: Vec<LocalTool>,
    max_steps: u32,
    first_choice: ToolChoice,
    params: Params,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model answered in text.
    Answered,
    /// The answer hit `max-tokens`.
    Length,
    /// The step limit was reached while the model was still calling tools.
    StepLimit,
}

impl Stop {
    /// `answered`, `length` or `step-limit`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Stop::Answered => "answered",
            Stop::Length => "length",
            Stop::StepLimit => "step-limit",
        }
    }
}

/// One tool call of a step and what it returned.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The call the model made.
    pub call: ToolCall,
    /// The tool's answer, or why it did not run.
    pub result: Result<ToolResult, ToolError>,
}

/// One model call of a run.
#[derive(Debug, Clone)]
pub struct Step {
    /// The calls the model made in this step (none for the answer).
    pub calls: Vec<CallRecord>,
    /// What the model call cost.
    pub usage: Usage,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Run {
    /// The text answer; `None` when the run stopped at its step limit.
    pub answer: Option<String>,
    /// Why it ended.
    pub stop: Stop,
    /// Every model call, in order.
    pub steps: Vec<Step>,
    /// The conversation, tool calls and results included.
    pub transcript: Vec<Turn>,
    /// The usage of all steps together.
    pub usage: Usage,
}

impl Run {
    /// Every tool call of the run, in order.
    pub fn calls(&self) -> impl Iterator<Item = &CallRecord> {
        self.steps.iter().flat_map(|s| s.calls.iter())
    }
}

impl Agent {
    /// An agent with a system prompt, no tools, 4 steps and default parameters.
    pub fn new(system: impl Into<String>) -> Self {
        Self {
            system: system.into(),
            tools: Vec::new(),
            local: Vec::new(),
            max_steps: 4,
            first_choice: ToolChoice::Auto,
            params: Params::default(),
        }
    }

    /// Offers the runtime tools this function's manifest grants ([`tools::list`]).
    pub fn granted_tools(mut self) -> Result<Self, ToolError> {
        self.tools.extend(tools::list()?);
        Ok(self)
    }

    /// Offers these runtime tools (a subset of [`tools::list`]).
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        self.tools.extend(tools);
        self
    }

    /// Offers a tool that runs in the guest: `run` gets the call's JSON arguments.
    pub fn local_tool(
        mut self,
        tool: Tool,
        run: impl Fn(&str) -> Result<ToolResult, ToolError> + 'static,
    ) -> Self {
        self.local.push(LocalTool {
            tool,
            run: Box::new(run),
        });
        self
    }

    /// The most model calls of a run (at least 1).
    pub fn max_steps(mut self, steps: u32) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// The tool choice of the first step ([`ToolChoice::Required`]: look something up
    /// before answering); later steps are [`ToolChoice::Auto`].
    pub fn first_choice(mut self, choice: ToolChoice) -> Self {
        self.first_choice = choice;
        self
    }

    /// Generation parameters of every step (`response-format` is the loop's own).
    pub fn params(mut self, params: Params) -> Self {
        self.params = params;
        self
    }

    /// Runs the loop on the user's message.
    pub fn run(&self, user: &str) -> inference::Result<Run> {
        let offered: Vec<Tool> = self
            .tools
            .iter()
            .cloned()
            .chain(self.local.iter().map(|l| l.tool.clone()))
            .collect();
        let mut transcript = vec![Turn::system(self.system.clone()), Turn::user(user)];
        let mut steps = Vec::new();
        let mut usage = Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
            duration_ms: 0,
        };
        for step in 0..self.max_steps {
            let last = step + 1 == self.max_steps;
            let mut params = self.params.clone();
            params.response_format = None;
            let choice = if step == 0 {
                self.first_choice.clone()
            } else {
                ToolChoice::Auto
            };
            if offered.is_empty() || (last && step > 0) {
                params.response_format = Some(ResponseFormat::Text);
            }
            let answer = if offered.is_empty() {
                let messages: Vec<inference::Message> = transcript
                    .iter()
                    .map(|t| inference::Message::new(t.role.clone(), t.content.clone()))
                    .collect();
                let c = inference::chat_with(&messages, &params)?;
                inference::ToolCompletion {
                    text: c.text,
                    tool_calls: Vec::new(),
                    finish_reason: c.finish_reason,
                    usage: c.usage,
                }
            } else {
                inference::chat_with_tools(&transcript, &offered, &choice, &params)?
            };
            add(&mut usage, &answer.usage);
            if answer.tool_calls.is_empty() {
                let stop = if answer.finish_reason == "length" {
                    Stop::Length
                } else {
                    Stop::Answered
                };
                transcript.push(Turn::assistant(answer.text.clone()));
                steps.push(Step {
                    calls: Vec::new(),
                    usage: answer.usage,
                });
                return Ok(Run {
                    answer: Some(answer.text.trim().to_string()),
                    stop,
                    steps,
                    transcript,
                    usage,
                });
            }
            transcript.push(Turn::calls(answer.tool_calls.clone()));
            let mut calls = Vec::with_capacity(answer.tool_calls.len());
            for call in answer.tool_calls {
                let result = self.call(&call);
                let text = match &result {
                    Ok(r) if r.is_error => format!("Error: {}", r.to_text()),
                    Ok(r) => r.to_text(),
                    Err(e) => format!("Error: {e}"),
                };
                transcript.push(Turn::tool_result(call.id.clone(), text));
                calls.push(CallRecord { call, result });
            }
            steps.push(Step {
                calls,
                usage: answer.usage,
            });
        }
        Ok(Run {
            answer: None,
            stop: Stop::StepLimit,
            steps,
            transcript,
            usage,
        })
    }

    fn call(&self, call: &ToolCall) -> Result<ToolResult, ToolError> {
        match self.local.iter().find(|l| l.tool.name == call.name) {
            Some(local) => (local.run)(&call.arguments),
            None => tools::call(&call.name, &call.arguments),
        }
    }
}

fn add(total: &mut Usage, step: &Usage) {
    total.prompt_tokens += step.prompt_tokens;
    total.completion_tokens += step.completion_tokens;
    total.duration_ms += step.duration_ms;
}
