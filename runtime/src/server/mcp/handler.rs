//! The MCP tools of the runtime, as an `rmcp` server handler: a thin adapter over the host
//! (agents) and the toolbox (tool components).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool as McpTool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::host::{Host, HostError, Request};
use crate::tools::{CallContext, Content, Grants, ToolError, ToolOutput};

/// How often a long call reports progress to a client that asked for it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The `/mcp` handler (one per session; cheap to clone).
#[derive(Clone)]
pub(super) struct McpFront {
    host: Arc<Host>,
}

impl McpFront {
    pub(super) fn new(host: Arc<Host>) -> Self {
        Self { host }
    }

    /// Tool components' tools: namespaces the operator did not configure.
    fn is_component_tool(&self, name: &str) -> bool {
        name.split_once('.')
            .is_some_and(|(ns, _)| !self.host.toolbox().is_reserved(ns))
    }

    async fn tools(&self) -> Vec<McpTool> {
        let mut tools: Vec<McpTool> = self
            .host
            .toolbox()
            .list(&Grants::all())
            .await
            .into_iter()
            .filter(|t| self.is_component_tool(&t.name))
            .map(|t| McpTool::new(t.name, t.description, object(t.input_schema)))
            .collect();
        for agent in self.host.agents() {
            let description = agent
                .description
                .clone()
                .unwrap_or_else(|| format!("The slmfn agent {}", agent.name));
            tools.push(McpTool::new(
                agent.name.clone(),
                description,
                object(agent_schema(&agent)),
            ));
        }
        tools
    }

    /// Calls a deployed tool component's tool.
    async fn call_component(
        &self,
        name: &str,
        arguments: &Value,
    ) -> Result<CallToolResult, ErrorData> {
        let context = CallContext {
            function: None,
            invocation: None,
            deadline: None,
        };
        match self
            .host
            .toolbox()
            .call(&Grants::all(), name, &arguments.to_string(), &context)
            .await
        {
            Ok(output) => Ok(result(output)),
            Err(ToolError::NotFound(m)) => Err(ErrorData::invalid_params(m, None)),
            Err(ToolError::InvalidArguments(m)) => Err(ErrorData::invalid_params(m, None)),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
                e.to_string(),
            )])),
        }
    }

    /// Invokes an agent as `/fn/{name}` would, its arguments as the JSON body.
    async fn call_agent(&self, name: &str, arguments: &Value) -> Result<CallToolResult, ErrorData> {
        let Some(agent) = self.host.agent(name) else {
            return Err(ErrorData::invalid_params(
                format!("tool {name:?} not found"),
                None,
            ));
        };
        self.host
            .toolbox()
            .validate(name, &agent_schema(&agent), arguments)
            .map_err(|e| ErrorData::invalid_params(e.to_string(), None))?;
        let request = Request {
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: arguments.to_string().into_bytes(),
        };
        match self.host.invoke(name, request).await {
            Ok(response) => {
                let text = String::from_utf8_lossy(&response.body).into_owned();
                let mut out = match serde_json::from_str::<Value>(&text) {
                    Ok(value @ Value::Object(_)) => CallToolResult::structured(value),
                    _ => CallToolResult::success(vec![ContentBlock::text(text)]),
                };
                out.is_error = Some(response.status >= 400);
                Ok(out)
            }
            Err(HostError::FunctionNotFound(_)) => Err(ErrorData::invalid_params(
                format!("tool {name:?} not found"),
                None,
            )),
            Err(e) => Ok(CallToolResult::error(vec![ContentBlock::text(
                e.to_string(),
            )])),
        }
    }
}

impl ServerHandler for McpFront {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("slmfn", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Deployed slmfn tool components ({function}.{tool}) and agents ({function}).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools().await))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let span = tracing::info_span!("mcp_call", tool = %name);
        let call = tracing::Instrument::instrument(
            async {
                if self.is_component_tool(&name) {
                    self.call_component(&name, &arguments).await
                } else {
                    self.call_agent(&name, &arguments).await
                }
            },
            span,
        );
        let Some(token) = context.meta.get_progress_token() else {
            return call.await.map(Into::into);
        };
        // A client that asked for progress hears from a long call every second.
        let started = Instant::now();
        let mut ticks = tokio::time::interval(PROGRESS_EVERY);
        ticks.tick().await;
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => return result.map(Into::into),
                _ = ticks.tick() => {
                    let elapsed = started.elapsed().as_secs_f64();
                    let _ = context
                        .peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), elapsed)
                                .with_message(format!("{name} running for {elapsed:.0} s")),
                        )
                        .await;
                }
            }
        }
    }
}

/// An agent's input schema: its manifest's `[input]`, else any object.
fn agent_schema(agent: &crate::manifest::Manifest) -> Value {
    agent
        .input
        .as_ref()
        .map_or_else(|| json!({"type": "object"}), |i| i.schema.clone())
}

fn object(schema: Value) -> Map<String, Value> {
    match schema {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn result(output: ToolOutput) -> CallToolResult {
    let content = output
        .content
        .into_iter()
        .map(|c| match c {
            Content::Text(t) => ContentBlock::text(t),
            Content::Json(v) => ContentBlock::text(v.to_string()),
        })
        .collect();
    let mut result = if output.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    if let Some(structured @ Value::Object(_)) = output.structured {
        result.structured_content = Some(structured);
    }
    result
}
