//! GGUF files: the header, typed metadata, and reading tensors.
//!
//! # Memory mapping
//!
//! The matrices our kernels read (`Q4_1`, `Q8_0` on the CPU) are not read at all: the file is
//! mapped ([`GgufFile::mapped`], `crate::mapped`) and each matrix is a range of the mapping,
//! so loading copies no weights and processes on one node share the page cache's copy. Only
//! matrices stacked from parts the file keeps apart (q/k/v) are copied once. Everything else
//! goes through candle, which cannot map GGUF weights (`QStorage::Cpu` owns a `Vec`): small
//! vectors (norms, biases), other formats, other devices. The resident size of a loaded model
//! is the file size (quantized weights), plus the `f32` copies of the opt-in dense prefill;
//! see [`ModelMetadata::weights_bytes`].

use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::error::{Error, Result};
use crate::mapped::MappedFile;

/// Architectures whose weights we can run (the `general.architecture` key).
pub const SUPPORTED_ARCHITECTURES: &str = "llama, qwen2, qwen3";

/// What the GGUF header says about a model, plus what loading it will cost.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMetadata {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// The context window we serve: the trained window, or less when configured.
    pub context_length: usize,
    /// `{arch}.context_length`: the window the model was trained with.
    pub trained_context_length: usize,
    /// Number of token ids the model can produce.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub embedding_length: usize,
    /// Transformer blocks.
    pub block_count: usize,
    /// Attention heads.
    pub head_count: usize,
    /// Key/value heads (fewer than `head_count` with grouped-query attention).
    pub head_count_kv: usize,
    /// Width of each query, key and value head: `attention.key_length` when given (Qwen3),
    /// else `embedding_length / head_count`.
    pub head_dim: usize,
    /// Dimensions of each head that get rotary embeddings.
    pub rope_dimension: usize,
    /// Base of the rotary frequencies.
    pub rope_freq_base: f64,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f64,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_token_id: Option<u32>,
    /// The dominant weight format of the matrices (e.g. `Q4_1`).
    pub weight_format: String,
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Estimated resident bytes of the loaded weights (shared by every session), including
    /// `dense_bytes`.
    pub weights_bytes: u64,
    /// Of `weights_bytes`, the `f32` copies of the matrices used to process prompts (0 when
    /// dense prefill is off).
    pub dense_bytes: u64,
    /// Bytes of KV cache one token of context costs a session (`f32` keys and values).
    pub kv_bytes_per_token: u64,
}

impl ModelMetadata {
    /// Resident bytes of one session whose KV cache holds a full context window.
    pub fn session_bytes(&self) -> u64 {
        // Saturating: an estimate past `u64` is past every budget.
        self.kv_bytes_per_token
            .saturating_mul(self.context_length as u64)
    }
}

/// An opened GGUF file whose header (metadata and tensor directory) has been parsed.
pub struct GgufFile {
    path: PathBuf,
    reader: BufReader<File>,
    file_bytes: u64,
    content: Content,
    /// The whole file mapped, once a matrix is read from the mapping.
    mapped: Option<Arc<MappedFile>>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata_keys", &self.content.metadata.len())
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens `path`, parses the header and checks the tensor directory against the file (see
    /// `check_tensors`). Reads no tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let file_bytes = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let content = read_header(&path, &mut reader, file_bytes)?;
        check_tensors(&path, &content, file_bytes)?;
        Ok(Self {
            path,
            reader,
            file_bytes,
            content,
            mapped: None,
        })
    }

    /// The file this header came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw header, for keys this module has no accessor for.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A string metadata value, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer metadata value of any width and signedness, if present and non-negative.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(value_to_u64)
    }

    /// A boolean metadata value, if present and a bool.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A required integer value, as an `InvalidModel` error when missing.
    fn require_usize(&self, key: &str) -> Result<usize> {
        self.get_u64(key)
            .map(|v| v as usize)
            .ok_or_else(|| Error::invalid_model(&self.path, format!("missing metadata `{key}`")))
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture").ok_or_else(|| {
            Error::invalid_model(&self.path, "missing metadata `general.architecture`")
        })
    }

    /// Fails with `UnsupportedArchitecture` unless we can run this file's architecture.
    pub fn ensure_supported(&self) -> Result<()> {
        let arch = self.architecture()?;
        if SUPPORTED_ARCHITECTURES.split(", ").any(|a| a == arch) {
            Ok(())
        } else {
            Err(Error::UnsupportedArchitecture {
                architecture: arch.to_string(),
                supported: SUPPORTED_ARCHITECTURES,
            })
        }
    }

    /// Reads the typed metadata. `context_limit` caps the served context window;
    /// `dense_prefill` says whether the estimate includes `f32` copies of the matrices.
    pub fn metadata(
        &self,
        context_limit: Option<usize>,
        dense_prefill: bool,
    ) -> Result<ModelMetadata> {
        let arch = self.architecture()?.to_string();
        let key = |k: &str| format!("{arch}.{k}");
        let trained_context_length = self.require_usize(&key("context_length"))?;
        let embedding_length = self.require_usize(&key("embedding_length"))?;
        let block_count = self.require_usize(&key("block_count"))?;
        let head_count = self.require_usize(&key("attention.head_count"))?;
        let head_count_kv = self
            .get_u64(&key("attention.head_count_kv"))
            .map_or(head_count, |v| v as usize);
        let key_length = self
            .get_u64(&key("attention.key_length"))
            .map(|v| v as usize);
        let value_length = self
            .get_u64(&key("attention.value_length"))
            .map(|v| v as usize);
        let inconsistent = |why: &str| {
            Error::invalid_model(
                &self.path,
                format!(
                    "inconsistent attention shape ({why}): {embedding_length} dims, {head_count} \
                     heads, {head_count_kv} kv heads, key length {key_length:?}, value length \
                     {value_length:?}"
                ),
            )
        };
        if head_count == 0 || head_count_kv == 0 || !head_count.is_multiple_of(head_count_kv) {
            return Err(inconsistent("heads"));
        }
        let head_dim = match key_length {
            Some(k) => k,
            None if embedding_length.is_multiple_of(head_count) => embedding_length / head_count,
            None => return Err(inconsistent("dims not a multiple of heads")),
        };
        if head_dim == 0
            || !head_dim.is_multiple_of(2)
            || value_length.is_some_and(|v| v != head_dim)
        {
            return Err(inconsistent("head width"));
        }
        // The query width; the key/value width is at most it (kv heads divide the heads).
        if head_count.checked_mul(head_dim).is_none() {
            return Err(inconsistent("query width overflows"));
        }
        let rope_dimension = self
            .get_u64(&key("rope.dimension_count"))
            .map_or(head_dim, |v| v as usize);
        let vocab_size = match self.get_u64(&key("vocab_size")) {
            Some(v) => v as usize,
            None => match self.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => {
                    return Err(Error::invalid_model(
                        &self.path,
                        "missing vocab size and `tokenizer.ggml.tokens`",
                    ));
                }
            },
        };
        let context_length = match context_limit {
            Some(limit) => trained_context_length.min(limit),
            None => trained_context_length,
        };
        let f32_of = |k: &str| match self.get(k) {
            Some(Value::F32(v)) => Some(*v as f64),
            Some(Value::F64(v)) => Some(*v),
            _ => None,
        };
        let (quantized_bytes, dense_bytes, weight_format) = self.estimate_weights();
        let dense_bytes = if dense_prefill { dense_bytes } else { 0 };
        // The header's numbers, multiplied: sizes past `u64` describe no model we can hold.
        let product = |what: &str, factors: &[usize]| {
            factors
                .iter()
                .try_fold(1u64, |n, &f| n.checked_mul(f as u64))
                .ok_or_else(|| {
                    Error::invalid_model(&self.path, format!("{what} overflow: {factors:?}"))
                })
        };
        // cos and sin tables: one row per position, rope_dimension / 2 frequencies, f32.
        let rope_bytes = product(
            "rotary table bytes (2 tables, positions, frequencies, 4)",
            &[2, context_length, rope_dimension / 2, 4],
        )?;
        let kv_bytes_per_token = product(
            "KV cache bytes per token (keys and values, blocks, kv heads, head width, 4)",
            &[2, block_count, head_count_kv, head_dim, 4],
        )?;
        let weights_bytes = (quantized_bytes.checked_add(dense_bytes))
            .and_then(|n| n.checked_add(rope_bytes))
            .ok_or_else(|| Error::invalid_model(&self.path, "weight bytes overflow"))?;
        Ok(ModelMetadata {
            name: self.get_str("general.name").map(str::to_string),
            architecture: arch.clone(),
            context_length,
            trained_context_length,
            vocab_size,
            embedding_length,
            block_count,
            head_count,
            head_count_kv,
            head_dim,
            rope_dimension,
            rope_freq_base: f32_of(&key("rope.freq_base")).unwrap_or(10_000.0),
            rms_norm_eps: f32_of(&key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5),
            bos_token_id: self
                .get_u64("tokenizer.ggml.bos_token_id")
                .map(|v| v as u32),
            eos_token_id: self
                .get_u64("tokenizer.ggml.eos_token_id")
                .map(|v| v as u32),
            weight_format,
            file_bytes: self.file_bytes,
            weights_bytes,
            dense_bytes,
            kv_bytes_per_token,
        })
    }

    /// Resident bytes of the weights as `llama` keeps them (quantized tensors as stored,
    /// `f16`/`bf16` ones widened to `f32`), the bytes of `f32` copies of the quantized matrices
    /// for dense prefill, and the format holding most of the weight bytes.
    fn estimate_weights(&self) -> (u64, u64, String) {
        let mut bytes = 0u64;
        let mut dense = 0u64;
        let mut by_format: Vec<(GgmlDType, u64)> = Vec::new();
        let tied_output = !self.has_tensor("output.weight");
        for (name, info) in &self.content.tensor_infos {
            let elems = info.shape.elem_count() as u64;
            let dtype = info.ggml_dtype;
            let stored = elems / dtype.block_size() as u64 * dtype.type_size() as u64;
            match by_format.iter_mut().find(|(d, _)| *d == dtype) {
                Some((_, n)) => *n += stored,
                None => by_format.push((dtype, stored)),
            }
            let float = matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            bytes += if float { elems * 4 } else { stored };
            let is_matrix = info.shape.rank() == 2 && (name != "token_embd.weight" || tied_output);
            if is_matrix && !float {
                dense += elems * 4;
            }
        }
        let format = by_format
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or_else(|| "unknown".to_string(), |(d, _)| format!("{d:?}"));
        (bytes, dense, format)
    }

    /// Whether the file holds a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Where tensor `name`'s bytes lie in the file, with its format and shape (`(rows, cols)`
    /// for a matrix); `None` when absent or past the end of the file.
    pub(crate) fn tensor_range(&self, name: &str) -> Option<(GgmlDType, Vec<usize>, Range<usize>)> {
        let info = self.content.tensor_infos.get(name)?;
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        if !elems.is_multiple_of(dtype.block_size()) {
            return None;
        }
        let len = elems / dtype.block_size() * dtype.type_size();
        let start =
            usize::try_from(self.content.tensor_data_offset.checked_add(info.offset)?).ok()?;
        let end = start.checked_add(len)?;
        (end as u64 <= self.file_bytes).then(|| (dtype, info.shape.dims().to_vec(), start..end))
    }

    /// The file mapped into memory (mapped on the first call).
    pub(crate) fn mapped(&mut self) -> Result<Arc<MappedFile>> {
        if let Some(m) = &self.mapped {
            return Ok(m.clone());
        }
        let m = MappedFile::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        self.mapped = Some(m.clone());
        Ok(m)
    }

    /// Reads one tensor (in its stored format) onto `device`.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        // candle builds a tensor of no elements from a dangling pointer (undefined behaviour).
        if self
            .content
            .tensor_infos
            .get(name)
            .is_some_and(|info| info.shape.elem_count() == 0)
        {
            return Err(Error::invalid_model(
                &self.path,
                format!("tensor `{name}` has no elements"),
            ));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| Error::invalid_model(&self.path, format!("tensor `{name}`: {e}")))
    }
}

/// Parses the header with candle's reader. That reader panics on one malformed header: it
/// divides by `general.alignment`, which may be 0. A panic there is the file's fault, so it
/// becomes an error like the others (the panic hook still reports it).
fn read_header(path: &Path, reader: &mut BufReader<File>, file_bytes: u64) -> Result<Content> {
    let read = std::panic::catch_unwind(AssertUnwindSafe(|| Content::read(reader)));
    let reason = match read {
        Ok(Ok(content)) => return Ok(content),
        Ok(Err(candle_core::Error::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated GGUF header: the file ends at {file_bytes} bytes")
        }
        Ok(Err(e)) => format!("malformed GGUF header: {e}"),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            format!(
                "malformed GGUF header: the reader panicked ({what}), as it does on a \
                 `general.alignment` of 0"
            )
        }
    };
    Err(Error::invalid_model(path, reason))
}

/// Checks the tensor directory: each tensor's element count and size fit in memory, in whole
/// blocks of its format, and its bytes lie inside the file. Everything that sizes a tensor
/// from its shape may then compute without overflowing, and nothing reads past the end.
fn check_tensors(path: &Path, content: &Content, file_bytes: u64) -> Result<()> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    // One order, so that a file with several bad tensors always names the same one.
    names.sort_unstable();
    for name in names {
        let info = &content.tensor_infos[name];
        let bad = |why: String| Error::invalid_model(path, format!("tensor `{name}`: {why}"));
        let dims = info.shape.dims();
        let dtype = info.ggml_dtype;
        let elems = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {dims:?} has too many elements")))?;
        if !elems.is_multiple_of(dtype.block_size()) {
            return Err(bad(format!(
                "{elems} elements are not whole {dtype:?} blocks of {}",
                dtype.block_size()
            )));
        }
        let end = (elems / dtype.block_size())
            .checked_mul(dtype.type_size())
            .and_then(|len| u64::try_from(len).ok())
            .and_then(|len| {
                content
                    .tensor_data_offset
                    .checked_add(info.offset)?
                    .checked_add(len)
            });
        if end.is_none_or(|end| end > file_bytes) {
            return Err(bad(format!(
                "{dtype:?} {dims:?} at offset {} runs past the end of the file ({file_bytes} bytes)",
                info.offset
            )));
        }
    }
    Ok(())
}

/// Any integer value (the writers of GGUF files disagree on widths) as `u64`.
pub(crate) fn value_to_u64(v: &Value) -> Option<u64> {
    match *v {
        Value::U8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::U64(v) => Some(v),
        Value::I8(v) => u64::try_from(v).ok(),
        Value::I16(v) => u64::try_from(v).ok(),
        Value::I32(v) => u64::try_from(v).ok(),
        Value::I64(v) => u64::try_from(v).ok(),
        _ => None,
    }
}
