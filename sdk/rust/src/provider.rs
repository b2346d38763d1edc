//! Tool components: a crate that offers tools to agents instead of answering HTTP.
//!
//! Set `kind = "tool"` in its `fn.toml`, export the tools with [`export_tools!`], and deploy it
//! with `fn deploy` like any function. An agent whose manifest grants `{name}.*` sees them as
//! `{name}.{tool}`; the runtime validates the arguments against each tool's input schema before
//! the call, and runs every call on a fresh instance with the tool function's own limits and
//! key/value namespace ([`crate::kv`]).
//!
//! # Examples
//!
//! ```no_run
//! use serde::Deserialize;
//! use slmfn_sdk::export_tools;
//! use slmfn_sdk::provider::{Tool, ToolError, ToolResult, tool};
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! struct Add {
//!     a: i64,
//!     b: i64,
//! }
//!
//! fn tools() -> Vec<Tool> {
//!     vec![tool::<Add>("add", "Adds two integers")]
//! }
//!
//! fn call(name: &str, arguments: &str) -> Result<ToolResult, ToolError> {
//!     match name {
//!         "add" => {
//!             let Add { a, b } = slmfn_sdk::provider::arguments(arguments)?;
//!             Ok(ToolResult::json(&serde_json::json!({"sum": a + b})))
//!         }
//!         other => Err(ToolError::NotFound(other.to_string())),
//!     }
//! }
//!
//! export_tools!(list = tools, call = call);
//! # fn main() {}
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::wit::slmfn::agent::tools::{Content, Tool, ToolError, ToolResult};

/// Bindings of the `slmfn:agent/tool-provider` world (the shared interfaces are those of
/// [`crate::wit`]). Not part of the API.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, unreachable_pub)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "tool-provider",
        pub_export_macro: true,
        export_macro_name: "__export_tool_provider_bindings",
        default_bindings_module: "slmfn_sdk::provider::wit",
        runtime_path: "slmfn_sdk::wit::__rt",
        with: {
            "slmfn:agent/kv@0.2.0": slmfn_sdk::wit::slmfn::agent::kv,
            "slmfn:agent/tools@0.2.0": slmfn_sdk::wit::slmfn::agent::tools,
        },
    });
}

/// A tool whose input schema is the JSON schema of `T` (a `schemars::JsonSchema` type).
pub fn tool<T: schemars::JsonSchema>(name: &str, description: &str) -> Tool {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    Tool {
        name: name.to_string(),
        description: description.to_string(),
        input_schema: serde_json::to_string(&schema).unwrap_or_else(|_| "{}".into()),
    }
}

/// The arguments as `T`. The runtime already checked them against the input schema, so an
/// error here means the schema and `T` disagree; it is [`ToolError::InvalidArguments`].
pub fn arguments<T: DeserializeOwned>(arguments: &str) -> Result<T, ToolError> {
    serde_json::from_str(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

impl ToolResult {
    /// A text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: vec![Content::Text(text.into())],
            structured: None,
            is_error: false,
        }
    }

    /// A structured answer (also as text content, for clients that read only text).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        let text =
            serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        Self {
            content: vec![Content::Text(text.clone())],
            structured: Some(text),
            is_error: false,
        }
    }

    /// A failure the tool reports to its caller (MCP `isError`): the call ran, the answer is
    /// an error message for the model to read.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            is_error: true,
            ..Self::text(text)
        }
    }

    /// The answer as one text: the text items joined, JSON items as written.
    pub fn to_text(&self) -> String {
        let parts: Vec<&str> = self
            .content
            .iter()
            .map(|c| match c {
                Content::Text(t) | Content::Json(t) => t.as_str(),
            })
            .collect();
        parts.join("\n")
    }
}

/// Exports a tool component's `list-tools` and `call-tool` (the `slmfn:agent/tool-provider`
/// world): `export_tools!(list = tools, call = call)` with `tools: fn() -> Vec<Tool>` and
/// `call: fn(&str, &str) -> Result<ToolResult, ToolError>` (tool name, JSON arguments).
#[rustfmt::skip]
#[macro_export]
macro_rules! export_tools {
    (list = $list:expr, call = $call:expr $(,)?) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct SlmfnTools;

            impl $crate::provider::wit::exports::slmfn::agent::provider::Guest for SlmfnTools {
                fn list_tools() -> ::std::vec::Vec<$crate::provider::Tool> {
                    ($list)()
                }

                fn call_tool(
                    name: ::std::string::String,
                    arguments: ::std::string::String,
                ) -> ::std::result::Result<$crate::provider::ToolResult, $crate::provider::ToolError> {
                    ($call)(&name, &arguments)
                }
            }

            $crate::provider::wit::__export_tool_provider_bindings!(SlmfnTools with_types_in $crate::provider::wit);
        };
    };
}
