//! MCP-shaped tools: only those the function manifest's `[tools] allowed` grants are visible.
//!
//! Errors are [`ToolError`] (the call never reached the tool); a tool that ran and failed
//! answers a [`ToolResult`] with `is_error` set. `?` converts a [`ToolError`] to
//! [`crate::Error::Internal`] in a handler.
//!
//! # Examples
//!
//! ```no_run
//! use slmfn_sdk::tools::{self, Content};
//!
//! # fn main() -> Result<(), slmfn_sdk::Error> {
//! for tool in tools::list()? {
//!     println!("{}: {}", tool.name, tool.description);
//! }
//! let result = tools::call_json("calc.add", &serde_json::json!({"a": 1, "b": 2}))?;
//! for item in &result.content {
//!     if let Content::Text(text) = item {
//!         println!("{text}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use serde::Serialize;

use crate::wit::slmfn::agent::tools as wit;

pub use wit::{Content, Tool, ToolError, ToolResult};

/// The tools this function may call.
pub fn list() -> Result<Vec<Tool>, ToolError> {
    wit::list()
}

/// Calls a tool (`provider.tool`) with JSON arguments.
pub fn call(name: &str, arguments: &str) -> Result<ToolResult, ToolError> {
    wit::call(name, arguments)
}

/// Calls a tool with `arguments` serialised as JSON; a value that cannot be serialised is
/// [`ToolError::InvalidArguments`].
pub fn call_json<T: Serialize + ?Sized>(
    name: &str,
    arguments: &T,
) -> Result<ToolResult, ToolError> {
    let arguments =
        serde_json::to_string(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
    call(name, &arguments)
}
