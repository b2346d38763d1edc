//! A loaded model: weights shared by every session, tokenizer, chat template, metadata.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use candle_core::Device;

use crate::constraint::{Constraint, Grammar, Grammars};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, ModelMetadata};
use crate::llama::{Llama, LlamaCache, Phase, Step};
use crate::message::Message;
use crate::template::ChatTemplate;
use crate::tokenizer::Tokenizer;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Cap on the served context window (the model's own and candle's limits still apply).
    /// Smaller windows bound the KV cache a session may grow to.
    pub context_length: Option<usize>,
    /// Where the weights live: [`crate::device::default_device`] (CPU unless built with `cuda`).
    pub device: Device,
    /// Keep `f32` copies of the weight matrices to process prompts with dense `f32` matrix
    /// products, for 4 bytes per parameter (+540 MB for SmolLM2-135M, and the dequantizing in
    /// the load time). Off (the default), prompts run through the batched quantized kernels
    /// (`crate::kernels::batch`: activations rounded to 16 bits per block),
    /// as fast on 2 cores of this project's machine and faster for short prompts; the `f32`
    /// path gives the logits of unquantized activations, for comparisons.
    pub dense_prefill: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            context_length: None,
            device: crate::device::default_device(),
            dense_prefill: false,
        }
    }
}

/// A loaded model. Cloning is cheap and shares the weights (an `Arc`); every [`crate::Session`] made
/// from it shares them too and owns only its KV cache.
#[derive(Clone)]
pub struct Model {
    inner: Arc<ModelInner>,
}

struct ModelInner {
    path: PathBuf,
    metadata: ModelMetadata,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// Immutable weights; every session brings its own KV cache.
    llama: Llama,
    device: Device,
    load_duration: Duration,
    /// The vocabulary's token trie for constrained decoding, built on first use (tens of
    /// milliseconds for a 49k vocabulary); the error text when it cannot be built.
    grammars: OnceLock<std::result::Result<Grammars, String>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.inner.path)
            .field("metadata", &self.inner.metadata)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF model on the CPU with default options. Blocking: reads the whole file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Loads a GGUF model. Blocking: reads the whole file.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let started = Instant::now();
        let path = path.as_ref().to_path_buf();
        if options.context_length == Some(0) {
            return Err(Error::InvalidInput(
                "context_length must be at least 1".into(),
            ));
        }
        let mut file = GgufFile::open(&path)?;
        file.ensure_supported()?;
        let metadata = file.metadata(options.context_length, options.dense_prefill)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        // Every id the tokenizer produces must be one the model takes.
        if tokenizer.vocab_size() > metadata.vocab_size {
            return Err(Error::invalid_model(
                &path,
                format!(
                    "the tokenizer has {} tokens, the model a vocabulary of {}",
                    tokenizer.vocab_size(),
                    metadata.vocab_size
                ),
            ));
        }
        let template = ChatTemplate::from_gguf(&file, &tokenizer)?;
        let llama = Llama::load(&mut file, &metadata, &options.device, options.dense_prefill)?;
        Ok(Self {
            inner: Arc::new(ModelInner {
                path,
                metadata,
                tokenizer,
                template,
                llama,
                device: options.device.clone(),
                load_duration: started.elapsed(),
                grammars: OnceLock::new(),
            }),
        })
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// What the GGUF header says, and what the model costs in memory.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.inner.metadata
    }

    /// The served context window (prompt plus completion).
    pub fn context_length(&self) -> usize {
        self.inner.metadata.context_length
    }

    /// The chat template (the model's own, or ChatML).
    pub fn template(&self) -> &ChatTemplate {
        &self.inner.template
    }

    /// The tokenizer built from the GGUF metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// The chat template (the model's own, or ChatML).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.inner.template
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// How long [`Model::load_with`] took.
    pub fn load_duration(&self) -> Duration {
        self.inner.load_duration
    }

    /// Whether two handles share the same loaded weights.
    pub fn ptr_eq(&self, other: &Model) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Prompt tokens for a chat: the template rendered with a generation prompt, special tokens
    /// parsed, BOS prepended when the model wants one and the template did not write it.
    /// Message content never becomes control tokens (see `chat_prompt`).
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages must not be empty".into()));
        }
        let ids = crate::chat_prompt::encode(
            &self.inner.tokenizer,
            &self.inner.template,
            messages,
            None,
        )?;
        Ok(self.with_bos(ids))
    }

    /// Prompt tokens for a chat whose template reads `tools` (OpenAI-shaped definitions):
    /// see [`crate::tool_call::ToolFormat`].
    pub fn encode_chat_with_tools(
        &self,
        messages: &[Message],
        tools: &[serde_json::Value],
    ) -> Result<Vec<u32>> {
        if messages.is_empty() {
            return Err(Error::InvalidInput("messages must not be empty".into()));
        }
        let ids = crate::chat_prompt::encode(
            &self.inner.tokenizer,
            &self.inner.template,
            messages,
            Some(tools),
        )?;
        Ok(self.with_bos(ids))
    }

    /// Prompt tokens for raw text completion: special-token text is encoded as plain text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.inner.tokenizer.encode(text, false)?;
        Ok(self.with_bos(ids))
    }

    fn with_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        let tokenizer = &self.inner.tokenizer;
        if let (true, Some(bos)) = (tokenizer.add_bos(), tokenizer.bos())
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        ids
    }

    /// Checks `grammar` against this model's vocabulary and starts its parser: an invalid or
    /// unsupported grammar is an `InvalidInput` error naming the problem.
    pub fn constrain(&self, grammar: &Grammar) -> Result<Constraint> {
        let grammars = self.inner.grammars.get_or_init(|| {
            Grammars::new(&self.inner.tokenizer, self.inner.metadata.vocab_size)
                .map_err(|e| e.to_string())
        });
        match grammars {
            Ok(g) => g.compile(grammar),
            Err(e) => Err(Error::InvalidInput(e.clone())),
        }
    }

    /// Whether sessions reuse the keys and values of a cached prompt prefix. Only where that
    /// cannot change a bit of the answer: where a prompt's forward pass is batch-invariant (the
    /// CPU, with `f32` or our kernels' weights; see `Session`'s prompt cache).
    pub fn prompt_cache(&self) -> bool {
        self.inner.llama.batch_invariant()
    }

    pub(crate) fn new_cache(&self) -> LlamaCache {
        self.inner.llama.new_cache()
    }

    /// Runs `tokens` after the positions in `cache`; returns the last position's logits.
    pub(crate) fn forward(
        &self,
        cache: &mut LlamaCache,
        tokens: &[u32],
        phase: Phase,
    ) -> Result<Vec<f32>> {
        self.inner.llama.forward(cache, tokens, phase)
    }

    /// Runs each step after its own cache's positions; returns each step's last logits. Where
    /// the CPU row path covers the model, one pass over the weights for all of them, each step
    /// getting the bits it would get alone (`crate::llama`'s row path).
    pub(crate) fn forward_steps(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>> {
        self.inner.llama.forward_steps(steps)
    }
}
