//! The files of a sentence-transformers model, from a directory or a zip archive.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_transformers::models::bert::Config as BertConfig;
use serde::Deserialize;

use super::Pooling;
use crate::error::{Error, Result};

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";
const POOLING: &str = "1_Pooling/config.json";
/// A safetensors header larger than this is not a model we can use (MiniLM's is ~15 KB).
const MAX_HEADER: u64 = 64 << 20;

/// What an embedding model is, from its small files and the safetensors header: enough to
/// reserve memory before reading any weight.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingHeader {
    /// The BERT configuration (`config.json`).
    pub config: BertConfig,
    /// How token states are pooled (`1_Pooling/config.json`; mean when absent).
    pub pooling: Pooling,
    /// Bytes of the weights once loaded as f32.
    pub weights_bytes: u64,
}

impl EmbeddingHeader {
    /// Reads the header of the model at `path` (a directory or a zip) without its weights.
    pub fn read(path: &Path) -> Result<Self> {
        let mut source = Source::open(path)?;
        let config = source.read(CONFIG)?;
        let pooling = source.read_optional(POOLING)?;
        let weights_bytes = {
            let mut reader = source.reader(WEIGHTS)?;
            weights_bytes(&mut reader).map_err(|r| Error::invalid_model(path, r))?
        };
        header(path, &config, pooling.as_deref(), weights_bytes)
    }
}

/// Everything [`super::EmbeddingModel::load_with`] needs.
pub(super) struct Files {
    pub(super) header: EmbeddingHeader,
    pub(super) tokenizer: Vec<u8>,
    pub(super) weights: Vec<u8>,
}

/// Reads the model at `path` (a directory or a zip).
pub(super) fn read(path: &Path) -> Result<Files> {
    let mut source = Source::open(path)?;
    let config = source.read(CONFIG)?;
    let pooling = source.read_optional(POOLING)?;
    let tokenizer = source.read(TOKENIZER)?;
    let weights = source.read(WEIGHTS)?;
    let weights_bytes =
        weights_bytes(&mut weights.as_slice()).map_err(|r| Error::invalid_model(path, r))?;
    Ok(Files {
        header: header(path, &config, pooling.as_deref(), weights_bytes)?,
        tokenizer,
        weights,
    })
}

fn header(
    path: &Path,
    config: &[u8],
    pooling: Option<&[u8]>,
    weights_bytes: u64,
) -> Result<EmbeddingHeader> {
    let config: BertConfig = serde_json::from_slice(config)
        .map_err(|e| Error::invalid_model(path, format!("{CONFIG}: {e}")))?;
    let invalid = |reason: String| Error::invalid_model(path, format!("{CONFIG}: {reason}"));
    if config.hidden_size == 0
        || config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(invalid(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    if config.max_position_embeddings < 2 || config.vocab_size == 0 {
        return Err(invalid(
            "max_position_embeddings and vocab_size must be positive".into(),
        ));
    }
    if config.pad_token_id >= config.vocab_size {
        return Err(invalid(format!(
            "pad_token_id {} is outside the vocabulary",
            config.pad_token_id
        )));
    }
    let pooling = match pooling {
        None => Pooling::Mean,
        Some(bytes) => pooling_mode(bytes)
            .map_err(|r| Error::invalid_model(path, format!("{POOLING}: {r}")))?,
    };
    Ok(EmbeddingHeader {
        config,
        pooling,
        weights_bytes,
    })
}

fn pooling_mode(bytes: &[u8]) -> Result<Pooling, String> {
    #[derive(Deserialize)]
    struct PoolingConfig {
        #[serde(default)]
        pooling_mode_mean_tokens: bool,
        #[serde(default)]
        pooling_mode_cls_token: bool,
        #[serde(default)]
        pooling_mode_max_tokens: bool,
        #[serde(default)]
        pooling_mode_mean_sqrt_len_tokens: bool,
    }
    let config: PoolingConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let modes = [
        config.pooling_mode_mean_tokens,
        config.pooling_mode_cls_token,
        config.pooling_mode_max_tokens,
        config.pooling_mode_mean_sqrt_len_tokens,
    ];
    match modes {
        [true, false, false, false] => Ok(Pooling::Mean),
        [false, true, false, false] => Ok(Pooling::Cls),
        _ => Err("unsupported pooling: exactly one of mean or CLS pooling is supported".into()),
    }
}

/// The f32 size of the floating-point tensors listed in a safetensors header (integer
/// buffers such as BERT's `position_ids` are not loaded).
fn weights_bytes(reader: &mut dyn Read) -> Result<u64, String> {
    let bad = |e: String| format!("{WEIGHTS}: {e}");
    let mut len = [0u8; 8];
    reader
        .read_exact(&mut len)
        .map_err(|e| bad(e.to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(bad(format!("header of {len} bytes is too large")));
    }
    let mut header = vec![0u8; len as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| bad(e.to_string()))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let mut bytes = 0u64;
    for (name, tensor) in &header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = tensor["dtype"].as_str().unwrap_or_default();
        if !matches!(dtype, "F32" | "F16" | "BF16" | "F64") {
            continue;
        }
        let shape = tensor["shape"]
            .as_array()
            .ok_or_else(|| bad(format!("tensor {name} has no shape")))?;
        let elements = shape
            .iter()
            .map(|d| {
                d.as_u64()
                    .ok_or_else(|| bad(format!("tensor {name}: bad shape")))
            })
            .try_fold(1u64, |acc, d| d.map(|d| acc.saturating_mul(d)))?;
        bytes = bytes.saturating_add(elements.saturating_mul(4));
    }
    if bytes == 0 {
        return Err(bad("no floating-point tensors".into()));
    }
    Ok(bytes)
}

/// A model directory, or a zip of one.
enum Source {
    Dir(PathBuf),
    Zip {
        path: PathBuf,
        archive: zip::ZipArchive<BufReader<File>>,
        /// Where the model's files are inside the archive (`""` or `dir/`).
        prefix: String,
    },
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        let file = File::open(path).map_err(io)?;
        let archive = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            Error::invalid_model(
                path,
                format!(
                    "neither a directory nor a zip archive of a sentence-transformers model \
                     ({e})"
                ),
            )
        })?;
        // The model's root is where the shallowest `config.json` is (not `1_Pooling/`'s).
        let prefix = archive
            .file_names()
            .filter_map(std::result::Result::ok)
            .filter(|n| *n == CONFIG || n.ends_with(&format!("/{CONFIG}")))
            .min_by_key(|n| (n.matches('/').count(), n.len()))
            .map(|n| n[..n.len() - CONFIG.len()].to_string())
            .ok_or_else(|| {
                Error::invalid_model(
                    path,
                    format!("the archive has no {CONFIG}: not a sentence-transformers model"),
                )
            })?;
        Ok(Self::Zip {
            path: path.to_path_buf(),
            archive,
            prefix,
        })
    }

    fn path(&self) -> &Path {
        match self {
            Self::Dir(path) | Self::Zip { path, .. } => path,
        }
    }

    fn missing(&self, name: &str) -> Error {
        Error::invalid_model(
            self.path(),
            format!(
                "no {name}: a sentence-transformers model needs {CONFIG}, {TOKENIZER} and {WEIGHTS}"
            ),
        )
    }

    /// A reader of member `name`; `Ok(None)` when it does not exist.
    fn open_member(&mut self, name: &str) -> Result<Option<(Box<dyn Read + '_>, u64)>> {
        match self {
            Self::Dir(dir) => {
                let file_path = dir.join(name);
                match File::open(&file_path) {
                    Ok(file) => {
                        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                        Ok(Some((Box::new(BufReader::new(file)), size)))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(Error::Io {
                        path: file_path,
                        source,
                    }),
                }
            }
            Self::Zip {
                path,
                archive,
                prefix,
            } => {
                let member = format!("{prefix}{name}");
                let Some(index) = archive.index_for_name(&member) else {
                    return Ok(None);
                };
                let reader = archive
                    .by_index(index)
                    .map_err(|e| Error::invalid_model(&*path, format!("{member}: {e}")))?;
                let size = reader.size();
                Ok(Some((Box::new(reader), size)))
            }
        }
    }

    fn reader(&mut self, name: &str) -> Result<Box<dyn Read + '_>> {
        let missing = self.missing(name);
        match self.open_member(name)? {
            Some((reader, _)) => Ok(reader),
            None => Err(missing),
        }
    }

    fn read_optional(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path().to_path_buf();
        let Some((mut reader, size)) = self.open_member(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 30));
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| Error::invalid_model(&path, format!("{name}: {e}")))?;
        Ok(Some(bytes))
    }

    fn read(&mut self, name: &str) -> Result<Vec<u8>> {
        match self.read_optional(name)? {
            Some(bytes) => Ok(bytes),
            None => Err(self.missing(name)),
        }
    }
}
