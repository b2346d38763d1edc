//! Sessions: one generation at a time over a model's shared weights, with a private KV cache.
//!
//! The generation loop runs on the calling thread and blocks it; callers on an async runtime run
//! it on a dedicated thread (see [`crate::pool`]). Between tokens it checks a [`CancelToken`].
//!
//! # Prompt cache
//!
//! A session keeps the keys and values of its last prompt. The next prompt that starts with the
//! same tokens (an agent resending its system prompt and tool schemas, a chat resending its
//! history) reuses them and prefills only the rest: [`Usage::cached_tokens`] says how many. The
//! last prompt token is always run again: its logits are the first token's. A session serves
//! one cache scope at a time ([`Session::set_cache_scope`]): the pool passes each job's, so that
//! callers do not reuse each other's prompts.
//!
//! **The cache never changes an answer.** A prompt's logits, and the keys and values it leaves,
//! are the same bits whether its prefix was reused or computed: only prompt positions are
//! reused, never generated ones (those went through generation's 8-bit products, where a
//! prompt goes through the batched 16-bit ones), and the prompt path is batch-invariant — each
//! position's values depend on its own row and the positions before it, computed in the same
//! order of float operations whatever the batch (`crate::llama`'s row path,
//! `crate::kernels::batch`, `crate::kernels::dense`). A
//! BLAS-style GEMM does not promise that (its kernels and blockings depend on the matrix sizes
//! and the CPU), which once made a cached prefix flip a near-tie in a greedy answer. Where the
//! prompt path is not batch-invariant (another device, candle's quantized formats without dense
//! copies: [`Model::prompt_cache`]), sessions do not reuse prefixes. Any change to the prompt
//! path must keep this property; `llama::tests` checks it bit for bit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::batcher::{Batcher, Member, SHARED_PREFILL_CHUNK};
use crate::error::{Error, Result};
use crate::llama::{LlamaCache, Phase};
use crate::model::Model;
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::{StopMatcher, StopScan};
use crate::tokenizer::Utf8Stream;

/// Prompt tokens per forward pass during prefill. Attention scores cost
/// `heads x chunk x context x 4` bytes: with SmolLM2 (9 heads) a 512-token chunk against a full
/// 4096-token window is 75 MB, where one 4096-token pass would need 600 MB. Larger chunks gain
/// little once the matrix products are this wide.
pub const PREFILL_CHUNK: usize = 512;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (EOS or another end-of-generation token) or a stop string matched.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The [`CancelToken`] was triggered (caller gone, deadline passed).
    Cancelled,
}

impl FinishReason {
    /// The snake_case name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Token counts and timings of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, the leading ones whose keys and values were reused from the
    /// session's previous prompt instead of computed (see the module docs).
    #[serde(default)]
    pub cached_tokens: usize,
    /// Tokens the model generated, excluding the end-of-generation token (which is not text).
    /// Tokens of a matched stop string are counted: they were computed.
    pub completion_tokens: usize,
    /// Of `completion_tokens`, those a grammar forced: appended without sampling, several
    /// per forward pass.
    #[serde(default)]
    pub forced_tokens: usize,
    /// Of `duration`, the time the grammar took: token masks, advancing it past each token and
    /// finding the tokens it forces (zero without a grammar).
    #[serde(default)]
    pub constraint_duration: Duration,
    /// Time to process the prompt (prefill of the tokens not cached).
    pub prompt_duration: Duration,
    /// Time from the start of the call to the first sampled token.
    pub time_to_first_token: Duration,
    /// Time of the whole call.
    pub duration: Duration,
}

impl Usage {
    /// Prefill throughput, over the tokens computed (not the cached ones).
    pub fn prompt_tokens_per_second(&self) -> f64 {
        rate(
            self.prompt_tokens - self.cached_tokens,
            self.prompt_duration,
        )
    }

    /// Decode throughput: tokens after the first, over the time after the first.
    pub fn generation_tokens_per_second(&self) -> f64 {
        rate(
            self.completion_tokens.saturating_sub(1),
            self.duration.saturating_sub(self.time_to_first_token),
        )
    }
}

fn rate(tokens: usize, time: Duration) -> f64 {
    if time.is_zero() {
        0.0
    } else {
        tokens as f64 / time.as_secs_f64()
    }
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text: exactly the concatenation of the streamed chunks.
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Counts and timings.
    pub usage: Usage,
    /// The generated token ids (end-of-generation tokens only with `ignore_eos`).
    pub tokens: Vec<u32>,
    /// The tool calls the answer made: set by [`crate::Prompt::Tools`] generations that
    /// ended (`Stop`) with a call; empty otherwise.
    pub tool_calls: Vec<crate::message::ToolCall>,
}

/// Stops a generation between two tokens: when [`Self::cancel`] is called (caller gone) or
/// when its deadline passes. Clones share the flag and the deadline.
#[derive(Clone, Debug, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl CancelToken {
    /// A token that is not cancelled and has no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that also cancels itself at `deadline` (a per-invocation inference budget).
    pub fn with_deadline(deadline: Instant) -> Self {
        Self {
            flag: Arc::default(),
            deadline: Some(deadline),
        }
    }

    /// Asks every generation watching this token to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::cancel`] was called or the deadline passed.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || self.deadline_passed()
    }

    /// Whether the deadline passed: lets a caller report a `Cancelled` completion as a timeout.
    pub fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// A generation context over a [`Model`]: the shared weights plus this session's KV cache.
pub struct Session {
    model: Model,
    cache: LlamaCache,
    /// The prompt tokens whose keys and values lead the cache (the prompt cache).
    cached_prompt: Vec<u32>,
    /// Whose prompt `cached_prompt` is (see [`Session::set_cache_scope`]).
    cache_scope: String,
    /// Where its forward passes run with other sessions' ([`Model::batched_session`]).
    batcher: Option<Arc<Batcher>>,
    /// Set from the first forward pass of a generation to its end.
    member: Option<Member>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("model", &self.model.path())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A new session with an empty KV cache, sharing this model's weights.
    pub fn session(&self) -> Session {
        Session::new(self.clone())
    }

    /// A session whose forward passes run in `batcher`'s steps, together with those of the
    /// other sessions made for it (see [`crate::batcher`]): the same answers, one pass over
    /// the weights per step for all of them.
    ///
    /// Panics when `batcher` is for another model.
    pub fn batched_session(&self, batcher: Arc<Batcher>) -> Session {
        assert!(batcher.model().ptr_eq(self), "a batcher of another model");
        let mut session = Session::new(self.clone());
        session.batcher = Some(batcher);
        session
    }
}

impl Session {
    pub(crate) fn new(model: Model) -> Self {
        let cache = model.new_cache();
        Self {
            model,
            cache,
            cached_prompt: Vec::new(),
            cache_scope: String::new(),
            batcher: None,
            member: None,
        }
    }

    /// Runs `tokens` after the cache: alone, or in the batcher's next step.
    fn forward(&mut self, tokens: &[u32], phase: Phase) -> Result<Vec<f32>> {
        let Some(batcher) = &self.batcher else {
            return self.model.forward(&mut self.cache, tokens, phase);
        };
        let member = self.member.get_or_insert_with(|| batcher.join());
        member.batcher().step(&mut self.cache, tokens, phase)
    }

    /// Prompt tokens per forward pass now: fewer while other sessions share the steps.
    fn prefill_chunk(&self) -> usize {
        match &self.batcher {
            Some(b) if b.members() > usize::from(self.member.is_some()) => SHARED_PREFILL_CHUNK,
            _ => PREFILL_CHUNK,
        }
    }

    /// Stops taking part in the batcher's steps until the next forward pass: generations and
    /// scorings end with it; the pool also calls it after a job that panicked.
    pub fn leave_batch(&mut self) {
        self.member = None;
    }

    /// Says whose generations come next: a scope other than the current one forgets the
    /// cached prompt, so that no scope reuses (and learns from `cached_tokens` or timing about)
    /// another's prompt. Sessions start in the empty scope.
    pub fn set_cache_scope(&mut self, scope: &str) {
        if self.cache_scope != scope {
            self.clear_prompt_cache();
            scope.clone_into(&mut self.cache_scope);
        }
    }

    /// Forgets the cached prompt and frees the KV cache: the next generation prefills its whole
    /// prompt.
    pub fn clear_prompt_cache(&mut self) {
        self.cache.reset();
        self.cached_prompt.clear();
    }

    /// How many leading tokens of `prompt` the cache holds and may reuse: the common prefix
    /// with the cached prompt, less the last prompt token (it runs again for its logits).
    pub fn reusable_prefix(&self, prompt: &[u32]) -> usize {
        if !self.model.prompt_cache() {
            return 0;
        }
        let common = self
            .cached_prompt
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        common.min(prompt.len().saturating_sub(1))
    }

    /// The model this session runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Generates a completion of `prompt`, calling `on_chunk` with each new piece of text as
    /// soon as it is known not to be part of a stop string (always complete UTF-8, never
    /// empty). Blocks the calling thread.
    ///
    /// Errors: `InvalidInput` for an empty prompt, unknown token ids or bad sampling params;
    /// `ContextLengthExceeded` when `prompt.len() + params.max_tokens` exceeds the context
    /// window; `Inference` when candle fails. Cancellation is not an error: the completion so far
    /// comes back with [`FinishReason::Cancelled`].
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        cancel: &CancelToken,
        on_chunk: impl FnMut(&str),
    ) -> Result<Completion> {
        let result = self.generate_batched(prompt, params, cancel, on_chunk);
        self.leave_batch();
        result
    }

    fn generate_batched(
        &mut self,
        prompt: &[u32],
        params: &SamplingParams,
        cancel: &CancelToken,
        mut on_chunk: impl FnMut(&str),
    ) -> Result<Completion> {
        let started = Instant::now();
        let model = self.model.clone();
        let metadata = model.metadata();
        let tokenizer = model.tokenizer();
        if prompt.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        if let Some(bad) = prompt.iter().find(|&&t| t as usize >= metadata.vocab_size) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                metadata.vocab_size
            )));
        }
        let mut sampler = Sampler::new(params)?;
        if prompt.len() + params.max_tokens > metadata.context_length {
            return Err(Error::ContextLengthExceeded {
                prompt_tokens: prompt.len(),
                max_tokens: params.max_tokens,
                context_length: metadata.context_length,
            });
        }
        // A grammar is checked before anything runs; the tokens it forces at the start go
        // through the prefill's forward passes, right after the prompt.
        let mut constraint = match &params.grammar {
            Some(grammar) => Some(model.constrain(grammar)?),
            None => None,
        };
        let mut forced = match &mut constraint {
            Some(c) => c.forced()?,
            None => Vec::new(),
        };
        forced.truncate(params.max_tokens);
        let reused = self.reusable_prefix(prompt);
        self.cache.truncate(reused);
        self.cached_prompt.truncate(reused);
        // Until the prefill succeeds, only the reused prefix is known good: a failed forward
        // pass may leave some layers a chunk ahead of others.
        let mut cached = std::mem::take(&mut self.cached_prompt);

        let mut out = Output::new(&params.stop, &mut on_chunk);
        let mut usage = Usage {
            prompt_tokens: prompt.len(),
            cached_tokens: reused,
            ..Usage::default()
        };
        let finish = |out: Output<'_>, reason, usage: Usage| Completion {
            text: out.text,
            finish_reason: reason,
            usage: Usage {
                duration: started.elapsed(),
                ..usage
            },
            tokens: out.tokens,
            tool_calls: Vec::new(),
        };

        let input = [&prompt[reused..], &forced[..]].concat();
        let prompt_rest = prompt.len() - reused;
        let mut logits = None;
        let mut done = 0;
        while done < input.len() {
            let chunk = &input[done..(done + self.prefill_chunk()).min(input.len())];
            if cancel.is_cancelled() {
                cached.extend_from_slice(&prompt[reused..reused + done.min(prompt_rest)]);
                self.cached_prompt = cached;
                usage.prompt_duration = started.elapsed();
                return Ok(finish(out, FinishReason::Cancelled, usage));
            }
            logits = Some(self.forward(chunk, Phase::Prompt)?);
            done += chunk.len();
        }
        cached.extend_from_slice(&prompt[reused..]);
        self.cached_prompt = cached;
        let mut logits = logits.expect("at least the last prompt token runs");
        usage.prompt_duration = started.elapsed();

        let mut history = Vec::with_capacity(prompt.len() + params.max_tokens);
        history.extend_from_slice(prompt);
        // Tokens chosen but not yet shown: each sampled token with the ones the grammar forces
        // after it; first the tokens forced at the start, which the prefill already ran.
        let mut prefilled = !forced.is_empty();
        let mut step = forced;
        let reason = 'generation: loop {
            if step.is_empty() {
                if let Some(c) = &mut constraint {
                    let masking = Instant::now();
                    c.mask(&mut logits)?;
                    usage.constraint_duration += masking.elapsed();
                }
                let token = sampler.sample(&mut logits, &history);
                let ends = tokenizer.is_end_of_generation(token);
                if ends && (!params.ignore_eos || constraint.is_some()) {
                    if history.len() == prompt.len() {
                        usage.time_to_first_token = started.elapsed();
                    }
                    break FinishReason::Stop;
                }
                step.push(token);
                if let Some(c) = &mut constraint {
                    let advancing = Instant::now();
                    c.commit(token)?;
                    step.extend(c.forced()?);
                    usage.constraint_duration += advancing.elapsed();
                }
            }
            if history.len() == prompt.len() {
                usage.time_to_first_token = started.elapsed();
            }
            step.truncate(params.max_tokens - usage.completion_tokens);
            // All of the first step when the grammar forced it, else all but the sampled token.
            let sampled = usize::from(!prefilled);
            for (i, &token) in step.iter().enumerate() {
                history.push(token);
                usage.completion_tokens += 1;
                usage.forced_tokens += usize::from(i >= sampled);
                if out.push_token(token, tokenizer.token_bytes(token)) {
                    break 'generation FinishReason::Stop;
                }
            }
            if constraint.as_ref().is_some_and(|c| c.is_stopped()) {
                break FinishReason::Stop;
            }
            if usage.completion_tokens == params.max_tokens {
                break FinishReason::Length;
            }
            if cancel.is_cancelled() {
                break FinishReason::Cancelled;
            }
            if !std::mem::take(&mut prefilled) {
                // Several forced tokens go through one pass (the batch-invariant prompt path).
                let phase = if step.len() == 1 {
                    Phase::Generate
                } else {
                    Phase::Prompt
                };
                logits = self.forward(&step, phase)?;
            }
            step.clear();
        };
        let reason = if out.finish() {
            FinishReason::Stop
        } else {
            reason
        };
        Ok(finish(out, reason, usage))
    }
}

impl Session {
    /// The log-probability of each of `continuations` after `prompt` (the sum over its tokens
    /// of the log-softmax of the logits before it): how likely the model finds each ending.
    /// `prompt` goes through the prompt cache like a generation's (and stays cached); each
    /// continuation runs on top of it through the generation path and is then dropped from
    /// the cache. Deterministic. Errors as [`Session::generate`]'s for the prompt; an empty
    /// continuation is `InvalidInput`.
    pub fn score(
        &mut self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>> {
        let result = self.score_batched(prompt, continuations, cancel);
        self.leave_batch();
        result
    }

    fn score_batched(
        &mut self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
        cancel: &CancelToken,
    ) -> Result<Vec<f32>> {
        let model = self.model.clone();
        let context = model.metadata().context_length;
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        if prompt.is_empty() || continuations.iter().any(Vec::is_empty) {
            return Err(Error::InvalidInput(
                "score needs a prompt and non-empty continuations".into(),
            ));
        }
        let vocab = model.metadata().vocab_size;
        if let Some(bad) = prompt
            .iter()
            .chain(continuations.iter().flatten())
            .find(|&&t| t as usize >= vocab)
        {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the vocabulary of {vocab} tokens"
            )));
        }
        if prompt.len() + longest > context {
            return Err(Error::ContextLengthExceeded {
                prompt_tokens: prompt.len(),
                max_tokens: longest,
                context_length: context,
            });
        }
        let reused = self.reusable_prefix(prompt);
        self.cache.truncate(reused);
        self.cached_prompt.truncate(reused);
        let mut cached = std::mem::take(&mut self.cached_prompt);
        let mut last = None;
        let mut done = reused;
        while done < prompt.len() {
            let chunk = &prompt[done..(done + self.prefill_chunk()).min(prompt.len())];
            if cancel.is_cancelled() {
                self.cached_prompt = cached;
                return Err(Error::Cancelled(model.path().display().to_string()));
            }
            last = Some(self.forward(chunk, Phase::Prompt)?);
            cached.extend_from_slice(chunk);
            done += chunk.len();
        }
        self.cached_prompt = cached;
        let last = last.expect("at least the last prompt token runs");
        let mut scores = Vec::with_capacity(continuations.len());
        for continuation in continuations {
            let mut logits = last.clone();
            let mut total = 0f32;
            for (i, &token) in continuation.iter().enumerate() {
                total += log_softmax_at(&logits, token);
                if i + 1 < continuation.len() {
                    logits = self.forward(&[token], Phase::Generate)?;
                }
            }
            self.cache.truncate(prompt.len());
            scores.push(total);
        }
        Ok(scores)
    }
}

/// `log softmax(logits)[token]`.
fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    logits[token as usize] - max - sum.ln()
}

/// The text side of a generation: bytes → UTF-8 → stop strings → chunks.
struct Output<'a> {
    utf8: Utf8Stream,
    stops: StopMatcher,
    on_chunk: &'a mut dyn FnMut(&str),
    text: String,
    tokens: Vec<u32>,
    stopped: bool,
}

impl<'a> Output<'a> {
    fn new(stops: &[String], on_chunk: &'a mut dyn FnMut(&str)) -> Self {
        Self {
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(stops),
            on_chunk,
            text: String::new(),
            tokens: Vec::new(),
            stopped: false,
        }
    }

    /// Adds a generated token; true when a stop string completed.
    fn push_token(&mut self, token: u32, bytes: &[u8]) -> bool {
        self.tokens.push(token);
        let text = self.utf8.push(bytes);
        self.push_text(&text)
    }

    fn push_text(&mut self, text: &str) -> bool {
        if text.is_empty() || self.stopped {
            return self.stopped;
        }
        match self.stops.push(text) {
            StopScan::Continue(safe) => self.emit(&safe),
            StopScan::Stopped(safe) => {
                self.emit(&safe);
                self.stopped = true;
            }
        }
        self.stopped
    }

    /// Flushes held text at the end; true when that completed a stop string.
    fn finish(&mut self) -> bool {
        if self.stopped {
            return true;
        }
        let tail = self.utf8.finish();
        if self.push_text(&tail) {
            return true;
        }
        let held = self.stops.finish();
        self.emit(&held);
        false
    }

    fn emit(&mut self, text: &str) {
        if !text.is_empty() {
            self.text.push_str(text);
            (self.on_chunk)(text);
        }
    }
}
