//! `slmfn:agent/tools`: a thin adapter over the process's [`Toolbox`] with the manifest's
//! grants (only granted tools are listed; anything else is `not-found`).

use std::sync::Arc;
use std::time::Instant;

use crate::tools::{self as toolbox, CallContext, Grants, Toolbox};
use crate::wit::slmfn::agent::tools::{self, Content, Tool, ToolError, ToolResult};

/// The tools capability of one invocation.
pub(crate) struct ToolsCtx {
    pub(crate) toolbox: Arc<Toolbox>,
    pub(crate) grants: Arc<Grants>,
    pub(crate) function: Arc<str>,
    pub(crate) invocation: Arc<str>,
    pub(crate) deadline: Instant,
}

impl tools::Host for ToolsCtx {
    async fn list(&mut self) -> Result<Vec<Tool>, ToolError> {
        let ctx = self;
        Ok(ctx
            .toolbox
            .list(&ctx.grants)
            .await
            .into_iter()
            .map(|t| Tool {
                name: t.name,
                description: t.description,
                input_schema: t.input_schema.to_string(),
            })
            .collect())
    }

    async fn call(&mut self, name: String, arguments: String) -> Result<ToolResult, ToolError> {
        let ctx = self;
        let context = CallContext {
            function: Some(ctx.function.clone()),
            invocation: Some(ctx.invocation.clone()),
            deadline: Some(ctx.deadline),
        };
        ctx.toolbox
            .call(&ctx.grants, &name, &arguments, &context)
            .await
            .map(result)
            .map_err(error)
    }
}

/// A toolbox answer in WIT terms.
pub(crate) fn result(out: toolbox::ToolOutput) -> ToolResult {
    ToolResult {
        content: out
            .content
            .into_iter()
            .map(|c| match c {
                toolbox::Content::Text(t) => Content::Text(t),
                toolbox::Content::Json(v) => Content::Json(v.to_string()),
            })
            .collect(),
        structured: out.structured.map(|v| v.to_string()),
        is_error: out.is_error,
    }
}

/// A toolbox error in WIT terms.
pub(crate) fn error(e: toolbox::ToolError) -> ToolError {
    match e {
        toolbox::ToolError::NotFound(m) => ToolError::NotFound(m),
        toolbox::ToolError::InvalidArguments(m) => ToolError::InvalidArguments(m),
        toolbox::ToolError::Unavailable(m) => ToolError::Unavailable(m),
        toolbox::ToolError::Failed(m) => ToolError::Failed(m),
    }
}

/// A WIT error (from a tool component) as a toolbox error.
pub(crate) fn from_wit(e: ToolError) -> toolbox::ToolError {
    match e {
        ToolError::NotFound(m) => toolbox::ToolError::NotFound(m),
        ToolError::InvalidArguments(m) => toolbox::ToolError::InvalidArguments(m),
        ToolError::Unavailable(m) => toolbox::ToolError::Unavailable(m),
        ToolError::Failed(m) => toolbox::ToolError::Failed(m),
    }
}
