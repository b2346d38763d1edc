//! The operator's tool configuration: a TOML file (`--tools-file`, `SLMFN_TOOLS_FILE`).
//!
//! ```toml
//! call_timeout_ms = 30000        # longest time one call may take (default 30 s)
//! forbid = ["http"]              # namespaces no function may see or call
//!
//! [http]                         # the built-in http.fetch; absent: no http provider
//! allow = ["api.github.com", "127.0.0.1:8123"]
//! max_bytes = 1048576
//! timeout_ms = 10000
//!
//! [mcp.everything]               # an MCP server on stdio
//! command = "npx"
//! args = ["-y", "@modelcontextprotocol/server-everything"]
//! env = { LOG_LEVEL = "warn" }
//!
//! [mcp.remote]                   # an MCP server over streamable HTTP
//! url = "http://127.0.0.1:3001/mcp"
//! headers = { Authorization = "Bearer ..." }
//! ```
//!
//! The built-in `clock` is always there unless forbidden.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::tools::builtin::{Clock, Http, HttpLimits};
use crate::tools::mcp::{McpServer, Transport};
use crate::tools::{ToolProvider, Toolbox};

/// Why the tools configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolsConfigError {
    /// The file cannot be read.
    #[error("cannot read the tools file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// Not TOML, unknown keys, wrong types.
    #[error("invalid tools file: {0}")]
    Parse(String),
    /// A setting is unusable.
    #[error("invalid tools file: {0}")]
    Invalid(String),
}

/// The parsed file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Longest time one call may take, in milliseconds.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
    /// Namespaces forbidden to every caller.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// The built-in `http` provider.
    #[serde(default)]
    pub http: Option<HttpSection>,
    /// External MCP servers by namespace.
    #[serde(default)]
    pub mcp: BTreeMap<String, McpSection>,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Hosts that may be fetched: `host` or `host:port`.
    pub allow: Vec<String>,
    /// Largest body read (default 1 MiB).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Time for one fetch in milliseconds (default 10 s).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// `[mcp.NAME]`: `command` (+ `args`, `env`) or `url` (+ `headers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// Program of a stdio server.
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment added for it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Endpoint of a streamable HTTP server.
    #[serde(default)]
    pub url: Option<String>,
    /// Headers for it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl ToolsConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self, ToolsConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ToolsConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Self::parse(&text)
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self, ToolsConfigError> {
        toml::from_str(text).map_err(|e| ToolsConfigError::Parse(e.message().to_string()))
    }

    /// The toolbox: `clock`, `http` when configured, every MCP server (started on first use).
    pub fn build(&self) -> Result<Toolbox, ToolsConfigError> {
        let mut providers: Vec<Arc<dyn ToolProvider>> = vec![Arc::new(Clock::default())];
        if let Some(http) = &self.http {
            if http.allow.is_empty() {
                return Err(ToolsConfigError::Invalid(
                    "[http] allow is empty: list the hosts http.fetch may reach".into(),
                ));
            }
            let limits = HttpLimits {
                allow: http.allow.clone(),
                max_bytes: http.max_bytes.unwrap_or(1024 * 1024),
                timeout: Duration::from_millis(http.timeout_ms.unwrap_or(10_000)),
            };
            providers.push(Arc::new(
                Http::new(limits).map_err(|e| ToolsConfigError::Invalid(e.to_string()))?,
            ));
        }
        for (name, server) in &self.mcp {
            check_namespace(name)?;
            if matches!(name.as_str(), "clock" | "http") {
                return Err(ToolsConfigError::Invalid(format!(
                    "[mcp.{name}]: {name:?} is a built-in provider's namespace"
                )));
            }
            let transport = match (&server.command, &server.url) {
                (Some(command), None) => Transport::Stdio {
                    command: command.clone(),
                    args: server.args.clone(),
                    env: server.env.clone(),
                },
                (None, Some(url)) => Transport::Http {
                    url: url.clone(),
                    headers: server.headers.clone(),
                },
                _ => {
                    return Err(ToolsConfigError::Invalid(format!(
                        "[mcp.{name}] needs exactly one of `command` (stdio) and `url` (streamable HTTP)"
                    )));
                }
            };
            providers.push(Arc::new(McpServer::new(name.clone(), transport)));
        }
        let forbidden: BTreeSet<String> = self.forbid.iter().cloned().collect();
        let timeout = Duration::from_millis(self.call_timeout_ms.unwrap_or(30_000));
        Ok(Toolbox::new(providers, forbidden, timeout))
    }
}

/// A namespace is a name without `.` (the separator of full tool names).
fn check_namespace(name: &str) -> Result<(), ToolsConfigError> {
    if name.is_empty() || name.contains('.') || name.chars().any(char::is_whitespace) {
        return Err(ToolsConfigError::Invalid(format!(
            "[mcp.{name:?}]: a provider name must be non-empty, without '.' or spaces"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_needs_one_transport() {
        let both = "[mcp.x]\ncommand = \"a\"\nurl = \"http://127.0.0.1:1/\"\n";
        let err = ToolsConfig::parse(both).unwrap().build().err().unwrap();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let unknown = ToolsConfig::parse("[mcp.x]\ncmd = \"a\"\n").unwrap_err();
        assert!(unknown.to_string().contains("cmd"), "{unknown}");
        let clash = ToolsConfig::parse("[mcp.clock]\ncommand = \"a\"\n").unwrap();
        assert!(clash.build().is_err());
    }
}
