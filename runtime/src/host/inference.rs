//! `slmfn:agent/inference`: a thin adapter from the WIT interface to [`crate::inference`].
//!
//! It enforces the manifest's model allow-list and budgets, fills defaults, and maps types and
//! errors; the pool does the work on its own threads. `embed` resolves its model like the
//! generation calls but against embedding models: the one named, else `[models]
//! default_embedding`, else the only allowed embedding model; a chat model there (or an
//! embedding model given to `chat`/`generate`) is `invalid-input`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slmfn_models::{
    Completion as ModelCompletion, ErrorClass, FinishReason, Grammar, Message as ModelMessage,
    ModelKind, Prompt, SamplingParams,
};
use wasmtime::component::{HasData, Resource, ResourceTable};

use crate::inference::{Asker, ChoiceError, Generation, Inference, ModelError, SamplingOverrides};
use crate::manifest::ModelsSection;
use crate::wit::CompletionStream;
use crate::wit::slmfn::agent::inference::{
    self, Completion, Error, HostCompletionStream, Message, Params, ResponseFormat, Tool,
    ToolChoice, ToolCompletion, Turn, Usage,
};

/// What the inference calls of one invocation reach: its [`InferenceCtx`] and the store's
/// resource table (for `completion-stream`).
pub(crate) struct InferenceView<'a> {
    pub(crate) ctx: &'a mut InferenceCtx,
    pub(crate) table: &'a mut ResourceTable,
}

/// The linker's handle on [`InferenceView`].
pub(crate) struct HasInference;

impl HasData for HasInference {
    type Data<'a> = InferenceView<'a>;
}

/// The inference capability of one invocation.
pub(crate) struct InferenceCtx {
    /// The runtime's inference service; `None` when no model pool is configured.
    pub(crate) service: Option<Arc<Inference>>,
    /// The manifest's `[models]` section (allow-list, default, budgets).
    pub(crate) models: Arc<ModelsSection>,
    /// The invocation's deadline: generation stops there.
    pub(crate) deadline: Instant,
    /// The function, for usage metering.
    pub(crate) function: Arc<str>,
}

impl InferenceCtx {
    pub(super) fn service(&self) -> Result<&Arc<Inference>, Error> {
        self.service.as_ref().ok_or_else(|| {
            Error::Unavailable(
                "inference is not available: this runtime has no models configured".into(),
            )
        })
    }

    /// The chat model a call uses ([`Inference::choose`] for this function).
    pub(super) fn resolve_model(&self, requested: Option<String>) -> Result<String, Error> {
        self.choose(requested, ModelKind::Chat)
    }

    /// The embedding model an `embed` call uses ([`Inference::choose`] for this function).
    fn resolve_embedding_model(&self, requested: Option<String>) -> Result<String, Error> {
        self.choose(requested, ModelKind::Embedding)
    }

    fn choose(&self, requested: Option<String>, kind: ModelKind) -> Result<String, Error> {
        self.service()?
            .choose(
                Asker::Function {
                    allowed: &self.models.allowed,
                    default: self.models.default.as_deref(),
                    default_embedding: self.models.default_embedding.as_deref(),
                },
                requested.as_deref(),
                kind,
            )
            .map_err(|e| match e {
                ChoiceError::WrongKind { .. } => Error::InvalidInput(e.to_string()),
                e => Error::ModelNotFound(e.to_string()),
            })
    }

    /// Sampling for a call: the model's defaults, overridden by the call, capped by the manifest.
    pub(super) fn sampling(&self, model: &str, params: &Params) -> Result<SamplingParams, Error> {
        let grammar = match &params.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::Json) => Some(Grammar::JsonSchema(serde_json::json!({}))),
            Some(ResponseFormat::JsonSchema(schema)) => {
                let schema = serde_json::from_str(schema).map_err(|e| {
                    Error::InvalidInput(format!("response-format json-schema is not JSON: {e}"))
                })?;
                Some(Grammar::JsonSchema(schema))
            }
            Some(ResponseFormat::Grammar(lark)) => Some(Grammar::Lark(lark.clone())),
        };
        let overrides = SamplingOverrides {
            max_tokens: params.max_tokens.map(|v| v as usize),
            max_tokens_cap: self.models.max_tokens.map(|v| v as usize),
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: params.top_k.map(|v| v as usize),
            repeat_penalty: params.repeat_penalty,
            seed: params.seed,
            stop: params.stop.clone(),
            grammar,
        };
        self.service()?
            .sampling(model, &overrides)
            .map_err(map_error)
    }

    /// When generation must stop: the invocation deadline or the manifest's inference budget.
    fn generation_deadline(&self) -> Instant {
        match self.models.max_inference_ms {
            Some(ms) => self
                .deadline
                .min(Instant::now() + Duration::from_millis(ms)),
            None => self.deadline,
        }
    }

    fn start(&self, prompt: Prompt, params: Params) -> Result<Generation, Error> {
        let model = self.resolve_model(params.model.clone())?;
        let sampling = self.sampling(&model, &params)?;
        self.start_with(&model, prompt, sampling)
    }

    /// Queues a generation of `model` with sampling already resolved.
    pub(super) fn start_with(
        &self,
        model: &str,
        prompt: Prompt,
        sampling: SamplingParams,
    ) -> Result<Generation, Error> {
        self.service()?
            .start(
                model,
                &self.function,
                prompt,
                sampling,
                Some(self.generation_deadline()),
            )
            .map(|g| g.for_function(self.function.clone()))
            .map_err(map_error)
    }

    async fn complete(&self, prompt: Prompt, params: Params) -> Result<Completion, Error> {
        let started = Instant::now();
        let mut generation = self.start(prompt, params)?;
        let result = generation.finish().await;
        finish(result, &generation, started)
    }
}

pub(super) fn finish(
    result: Result<ModelCompletion, ModelError>,
    generation: &Generation,
    started: Instant,
) -> Result<Completion, Error> {
    let completion = result.map_err(map_error)?;
    if completion.finish_reason == FinishReason::Cancelled && generation.deadline_passed() {
        return Err(Error::Timeout);
    }
    tracing::debug!(
        prompt_tokens = completion.usage.prompt_tokens,
        cached_tokens = completion.usage.cached_tokens,
        completion_tokens = completion.usage.completion_tokens,
        "inference done"
    );
    Ok(Completion {
        text: completion.text,
        finish_reason: completion.finish_reason.as_str().into(),
        usage: Usage {
            prompt_tokens: saturate(completion.usage.prompt_tokens),
            completion_tokens: saturate(completion.usage.completion_tokens),
            duration_ms: saturate(started.elapsed().as_millis() as usize),
        },
    })
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn map_error(e: ModelError) -> Error {
    // The WIT cases carry the bare name or complaint where the variant says what it is.
    let message = match &e {
        ModelError::ModelNotFound(m) | ModelError::InvalidInput(m) => m.clone(),
        e => e.to_string(),
    };
    match e.class() {
        ErrorClass::NotFound => Error::ModelNotFound(message),
        ErrorClass::Overloaded(retry_after) => {
            Error::Overloaded(saturate(retry_after.as_millis() as usize).max(1))
        }
        ErrorClass::InvalidInput => Error::InvalidInput(message),
        ErrorClass::ContextLengthExceeded => Error::ContextLengthExceeded(message),
        ErrorClass::Timeout => Error::Timeout,
        ErrorClass::Unavailable => Error::Unavailable(message),
        ErrorClass::Internal => Error::Runtime(message),
    }
}

fn messages(messages: Vec<Message>) -> Result<Prompt, Error> {
    let converted = messages
        .into_iter()
        .map(|m| match m.role.as_str() {
            "system" | "user" | "assistant" | "tool" => Ok(ModelMessage::new(m.role, m.content)),
            other => Err(Error::InvalidInput(format!(
                "unknown message role {other:?} (use system, user, assistant or tool)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if converted.is_empty() {
        return Err(Error::InvalidInput(
            "chat needs at least one message".into(),
        ));
    }
    Ok(Prompt::Chat(converted))
}

impl inference::Host for InferenceView<'_> {
    async fn chat_with_tools(
        &mut self,
        turns: Vec<Turn>,
        tools: Vec<Tool>,
        choice: ToolChoice,
        params: Params,
    ) -> Result<ToolCompletion, Error> {
        self.ctx.chat_with_tools(turns, tools, choice, params).await
    }

    async fn chat(&mut self, msgs: Vec<Message>, params: Params) -> Result<Completion, Error> {
        self.ctx.complete(messages(msgs)?, params).await
    }

    async fn generate(&mut self, prompt: String, params: Params) -> Result<Completion, Error> {
        self.ctx.complete(Prompt::Text(prompt), params).await
    }

    async fn chat_stream(
        &mut self,
        msgs: Vec<Message>,
        params: Params,
    ) -> wasmtime::Result<Result<Resource<CompletionStream>, Error>> {
        let prompt = match messages(msgs) {
            Ok(prompt) => prompt,
            Err(e) => return Ok(Err(e)),
        };
        let generation = match self.ctx.start(prompt, params) {
            Ok(generation) => generation,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(self.table.push(CompletionStream {
            generation,
            started: Instant::now(),
        })?))
    }

    async fn embed(
        &mut self,
        texts: Vec<String>,
        model: Option<String>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let ctx = &self.ctx;
        let model = ctx.resolve_embedding_model(model)?;
        let deadline = ctx.generation_deadline();
        let embeddings = ctx
            .service()?
            .embed(&model, Some(&ctx.function), texts, Some(deadline))
            .await
            .map_err(map_error)?;
        tracing::debug!(
            model,
            prompt_tokens = embeddings.prompt_tokens,
            texts = embeddings.vectors.len(),
            "embedding done"
        );
        Ok(embeddings.vectors)
    }
}

impl HostCompletionStream for InferenceView<'_> {
    async fn next(
        &mut self,
        stream: Resource<CompletionStream>,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        let stream = self.table.get_mut(&stream)?;
        Ok(Ok(stream.generation.next_chunk().await))
    }

    async fn finish(
        &mut self,
        stream: Resource<CompletionStream>,
    ) -> wasmtime::Result<Result<Completion, Error>> {
        let stream = self.table.get_mut(&stream)?;
        let result = stream.generation.finish().await;
        Ok(finish(result, &stream.generation, stream.started))
    }

    async fn drop(&mut self, stream: Resource<CompletionStream>) -> wasmtime::Result<()> {
        // Dropping the generation cancels it if it is still running.
        self.table.delete(stream)?;
        Ok(())
    }
}
