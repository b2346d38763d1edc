//! `slmfn:agent/tools`: only tools the manifest grants are visible. No tool provider is wired
//! in yet, so granted tools answer `unavailable` and ungranted ones `not-found`.

use crate::host::bindings::slmfn::agent::tools::{self, Tool, ToolError, ToolResult};
use crate::host::state::HostState;

impl tools::Host for HostState {
    async fn list(&mut self) -> Result<Vec<Tool>, ToolError> {
        if self.tools_allowed.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ToolError::Unavailable(
                "no tool providers are configured in this runtime".into(),
            ))
        }
    }

    async fn call(&mut self, name: String, _arguments: String) -> Result<ToolResult, ToolError> {
        let granted = self
            .tools_allowed
            .iter()
            .any(|pattern| match pattern.strip_suffix(".*") {
                Some(provider) => name
                    .strip_prefix(provider)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => *pattern == name,
            });
        if !granted {
            return Err(ToolError::NotFound(format!(
                "tool {name:?} is not granted to this function (add it to [tools] allowed in fn.toml)"
            )));
        }
        Err(ToolError::Unavailable(format!(
            "tool {name:?}: no tool providers are configured in this runtime"
        )))
    }
}
