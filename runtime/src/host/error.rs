//! Errors of the host: deploys, loads and invocations.

use crate::manifest::ManifestError;
use crate::registry::RegistryError;

/// Why a host operation failed. Each variant carries what a user needs to act.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// The function is a tool component: it has no HTTP entry point.
    #[error(
        "function {0:?} is a tool component (kind = \"tool\"): its tools are called by agents that grant them, or through /mcp, not at /fn"
    )]
    NotAnAgent(String),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The manifest names another function than the deploy path.
    #[error("fn.toml names function {manifest:?} but the deploy is for {path:?}")]
    NameMismatch {
        /// Name in the manifest.
        manifest: String,
        /// Name in the request path.
        path: String,
    },
    /// The upload is not a usable component.
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The invocation ran past its deadline.
    #[error("function {function:?} exceeded its deadline of {timeout_ms} ms")]
    DeadlineExceeded {
        /// The function.
        function: String,
        /// Its deadline.
        timeout_ms: u64,
    },
    /// The guest trapped (panic, stack overflow, out of memory, ...).
    #[error("function {function:?} trapped: {message}")]
    Trap {
        /// The function.
        function: String,
        /// The trap and what the guest printed to stderr before it.
        message: String,
    },
    /// The guest returned its own error.
    #[error("{0}")]
    Guest(GuestError),
    /// All instance slots of the function stayed busy until the deadline.
    #[error("function {function:?} is at its concurrency limit of {limit}; retry later")]
    Busy {
        /// The function.
        function: String,
        /// Its `max_concurrency`.
        limit: u32,
    },
    /// Too many calls of the function wait already (`--max-waiting`).
    #[error(
        "function {function:?} has {waiting} calls waiting for an instance already; retry later"
    )]
    QueueFull {
        /// The function.
        function: String,
        /// The bound on waiters.
        waiting: usize,
    },
    /// The guest memory budget stayed taken until the deadline.
    #[error(
        "function {function:?} needs {memory_mb} MiB per instance and the guest memory budget ({budget_mb} MiB, --guest-memory-mb) stayed taken by running instances; retry later"
    )]
    MemoryBusy {
        /// The function.
        function: String,
        /// Its `memory_mb`.
        memory_mb: u32,
        /// The budget.
        budget_mb: u32,
    },
    /// A deploy asks more memory per instance than the whole guest memory budget.
    #[error(
        "function {function:?} asks memory_mb = {memory_mb}, more than the runtime's whole guest memory budget of {budget_mb} MiB (--guest-memory-mb); lower limits.memory_mb"
    )]
    OverMemoryBudget {
        /// The function.
        function: String,
        /// Its `memory_mb`.
        memory_mb: u32,
        /// The budget.
        budget_mb: u32,
    },
    /// A host-side failure (a bug or an exhausted host resource).
    #[error("internal error: {0}")]
    Internal(String),
}

/// An error a guest returned from `handle` (the WIT `types.error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// The input was malformed.
    BadRequest(String),
    /// Something the request named does not exist.
    NotFound(String),
    /// Any other failure inside the function.
    Internal(String),
    /// A capacity limit was hit; retry after this many milliseconds.
    Overloaded(u32),
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::BadRequest(m) | GuestError::NotFound(m) | GuestError::Internal(m) => {
                f.write_str(m)
            }
            GuestError::Overloaded(ms) => write!(f, "overloaded; retry after {ms} ms"),
        }
    }
}

/// Result alias for the host.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
