//! `inference.chat-with-tools`: the WIT face of tool calling, a thin adapter over
//! `slmfn_models::tool_select` — the same tool block in the system prompt, tool choice and
//! constraint on the answer as the OpenAI API's `tools`, so a call names one of the tools and
//! its arguments obey that tool's input schema by construction.

use std::time::Instant;

use serde_json::Value;
use slmfn_models::tool_call::{self, ToolSpec};
use slmfn_models::tool_select::{Technique, ToolRequest};
use slmfn_models::{Grammar, Message as ModelMessage, Prompt};

use crate::host::inference::{InferenceCtx, finish, map_error};
use crate::wit::slmfn::agent::inference::{
    Error, Params, ResponseFormat, Tool, ToolCall, ToolChoice, ToolCompletion, Turn,
};

impl InferenceCtx {
    /// A chat that answers text or calls one of `tools` (see the module docs).
    pub(super) async fn chat_with_tools(
        &self,
        turns: Vec<Turn>,
        tools: Vec<Tool>,
        choice: ToolChoice,
        params: Params,
    ) -> Result<ToolCompletion, Error> {
        // `response-format: text` asks for a text answer with the same tools listed (an
        // agent's last step: the prompt keeps its cached prefix); JSON formats constrain a
        // text answer (under `auto` beside the calls; a grammar only under `none`).
        let text_only = matches!(params.response_format, Some(ResponseFormat::Text));
        let specs = tools
            .iter()
            .enumerate()
            .map(|(i, t)| spec(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        let choice = match choice {
            _ if text_only => tool_call::ToolChoice::None,
            ToolChoice::Auto => tool_call::ToolChoice::Auto,
            ToolChoice::Required => tool_call::ToolChoice::Required,
            ToolChoice::Function(name) => tool_call::ToolChoice::Function(name),
        };
        tool_call::validate(&specs, &choice).map_err(map_error)?;
        let messages = turns
            .into_iter()
            .enumerate()
            .map(|(i, t)| message(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        if messages.is_empty() {
            return Err(Error::InvalidInput(
                "chat-with-tools needs at least one turn".into(),
            ));
        }
        let model = self.resolve_model(params.model.clone())?;
        let mut sampling = self.sampling(&model, &params)?;
        let answer = sampling.grammar.take();
        if let Some(answer) = &answer {
            answer.check().map_err(map_error)?;
        }
        tool_call::check_answer(&choice, answer.as_ref()).map_err(map_error)?;
        let mut prompt = Prompt::Tools(Box::new(ToolRequest {
            messages,
            tools: specs,
            choice,
            technique: Technique::default(),
            answer,
            similarity: None,
        }));
        self.service()?
            .route(Some(&self.function), &mut prompt)
            .await;
        let started = Instant::now();
        let mut generation = self.start_with(&model, prompt, sampling)?;
        let result = generation.finish().await;
        let calls = result
            .as_ref()
            .map(|c| c.tool_calls.clone())
            .unwrap_or_default();
        let completion = finish(result, &generation, started)?;
        if calls.is_empty() {
            return Ok(ToolCompletion {
                text: completion.text,
                tool_calls: Vec::new(),
                finish_reason: completion.finish_reason,
                usage: completion.usage,
            });
        }
        Ok(ToolCompletion {
            text: String::new(),
            tool_calls: calls
                .into_iter()
                .map(|c| ToolCall {
                    id: format!("call_{}", uuid::Uuid::new_v4().simple()),
                    name: c.name,
                    arguments: c.arguments.to_string(),
                })
                .collect(),
            finish_reason: "tool-calls".into(),
            usage: completion.usage,
        })
    }
}

/// `tools[i]` for the model: its input schema parsed and checked.
fn spec(i: usize, tool: &Tool) -> Result<ToolSpec, Error> {
    let named = |what: String| Error::InvalidInput(format!("tools[{i}] ({}): {what}", tool.name));
    let parameters: Value = serde_json::from_str(&tool.input_schema)
        .map_err(|e| named(format!("the input schema is not JSON: {e}")))?;
    Grammar::JsonSchema(parameters.clone())
        .check()
        .map_err(|e| named(e.to_string()))?;
    Ok(ToolSpec {
        name: tool.name.clone(),
        description: tool.description.clone(),
        parameters,
        examples: Vec::new(),
    })
}

/// `turns[i]` for the model: an assistant's calls as its `tool_calls`; a `tool` turn must say
/// which call it answers.
fn message(i: usize, turn: Turn) -> Result<ModelMessage, Error> {
    match turn.role.as_str() {
        "system" | "user" | "assistant" | "tool" => {}
        other => {
            return Err(Error::InvalidInput(format!(
                "turns[{i}]: unknown role {other:?} (use system, user, assistant or tool)"
            )));
        }
    }
    if turn.role == "tool" && turn.tool_call_id.as_deref().is_none_or(str::is_empty) {
        return Err(Error::InvalidInput(format!(
            "turns[{i}] has role tool but no tool-call-id"
        )));
    }
    if turn.tool_calls.is_empty() {
        let mut message = ModelMessage::new(turn.role, turn.content);
        message.tool_call_id = turn.tool_call_id;
        return Ok(message);
    }
    if turn.role != "assistant" {
        return Err(Error::InvalidInput(format!(
            "turns[{i}]: only assistant turns carry tool-calls"
        )));
    }
    let calls = turn
        .tool_calls
        .into_iter()
        .enumerate()
        .map(|(j, c)| {
            let arguments = serde_json::from_str(&c.arguments).map_err(|e| {
                Error::InvalidInput(format!(
                    "turns[{i}].tool-calls[{j}] ({}): the arguments are not JSON: {e}",
                    c.name
                ))
            })?;
            Ok(tool_call::ToolCall {
                name: c.name,
                arguments,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(ModelMessage {
        content: turn.content,
        ..ModelMessage::calls(calls)
    })
}
