//! Tools: what agents call besides the model, behind one [`ToolProvider`] trait.
//!
//! A [`Toolbox`] holds the providers of the process under their namespaces: the built-in host
//! tools ([`builtin`]: `clock`, `http`), external MCP servers configured by the operator
//! ([`mcp`], through the official `rmcp` client), and deployed WASM tool components (the host
//! registers one provider per `kind = "tool"` function). A tool's full name is
//! `provider.tool`.
//!
//! Every call goes through [`Toolbox::call`]: the function's [`Grants`] (a tool not granted
//! is [`ToolError::NotFound`] with the same message as a tool that does not exist), the
//! arguments parsed and validated against the tool's input schema (no remote `$ref` is ever
//! fetched), a per-call timeout, a `tool_call` span with the invocation id, and the
//! `slmfn_tool_*` metrics.
//!
//! This module knows nothing of HTTP routes or wasmtime: the WIT `tools` interface and the
//! `/mcp` server are adapters over it.

pub mod builtin;
pub mod config;
mod grants;
pub mod mcp;
mod metrics;
mod schema;
mod toolbox;

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use serde_json::Value;

pub use config::{ToolsConfig, ToolsConfigError};
pub use grants::Grants;
pub use metrics::ToolMetrics;
pub use schema::check_schema;
pub use toolbox::Toolbox;

/// A tool as its provider describes it (the name without the provider's namespace).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// The name within the provider.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// A tool as a caller sees it: the namespaced name, `provider.tool`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// `provider.tool`.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// JSON Schema of the arguments.
    pub input_schema: Value,
}

/// One content item of a tool's answer, as in MCP.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// A JSON value.
    Json(Value),
}

/// A tool's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOutput {
    /// The content items.
    pub content: Vec<Content>,
    /// Structured content, when the tool returns one.
    pub structured: Option<Value>,
    /// The tool itself reports a failure (MCP `isError`).
    pub is_error: bool,
}

impl ToolOutput {
    /// A text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: vec![Content::Text(text.into())],
            ..Self::default()
        }
    }

    /// A structured answer, its JSON also as text content (MCP clients read either).
    pub fn structured(value: Value) -> Self {
        Self {
            content: vec![Content::Text(value.to_string())],
            structured: Some(value),
            is_error: false,
        }
    }

    /// A failure the tool reports (the call reached it).
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            is_error: true,
            ..Self::text(text)
        }
    }

    /// The answer as one text: the text items joined, JSON items written out.
    pub fn to_text(&self) -> String {
        let parts: Vec<String> = self
            .content
            .iter()
            .map(|c| match c {
                Content::Text(t) => t.clone(),
                Content::Json(v) => v.to_string(),
            })
            .collect();
        parts.join("\n")
    }
}

/// Why a tool call did not get an answer from the tool.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// No such tool, or not granted to the caller (the same message either way).
    #[error("{0}")]
    NotFound(String),
    /// The arguments are not JSON or violate the input schema; the tool did not run.
    #[error("{0}")]
    InvalidArguments(String),
    /// The provider cannot serve now (not configured, starting, restarting).
    #[error("{0}")]
    Unavailable(String),
    /// The provider failed: it crashed, trapped, timed out or answered garbage.
    #[error("{0}")]
    Failed(String),
}

/// Who calls and until when.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The calling function (for metrics and logs); `None` for `/mcp` clients.
    pub function: Option<Arc<str>>,
    /// The invocation id, for the span.
    pub invocation: Option<Arc<str>>,
    /// The caller's deadline: a call never runs past it.
    pub deadline: Option<Instant>,
}

/// A source of tools under one namespace.
///
/// `list` may be called often: providers cache their lists (and refresh them when the source
/// says they changed). `call` gets arguments already validated against the tool's schema.
pub trait ToolProvider: Send + Sync + 'static {
    /// The namespace: the part before the first `.` of the tools' full names.
    fn namespace(&self) -> &str;

    /// The tools offered now.
    fn list(&self) -> BoxFuture<'_, Result<Arc<[ToolDef]>, ToolError>>;

    /// Calls `tool` (a name from [`ToolProvider::list`]) with validated `arguments`.
    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
        context: &'a CallContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>>;
}
