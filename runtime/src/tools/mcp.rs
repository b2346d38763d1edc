//! External MCP servers as tool providers, through the official Rust SDK (`rmcp`) as client:
//! stdio (a child process the runtime starts) or streamable HTTP (a URL).
//!
//! The connection starts on first use. When the server dies (the process exits, the HTTP
//! session breaks), the call that finds out fails with a tool error and the next call starts
//! it again, waiting out a backoff that doubles with each failed start (up to 30 s). The tool
//! list is cached and dropped when the server sends `notifications/tools/list_changed`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::tools::{CallContext, Content, ToolDef, ToolError, ToolOutput, ToolProvider};

/// The longest wait between two start attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How to reach an MCP server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Environment variables added to the runtime's own.
        env: BTreeMap<String, String>,
    },
    /// A streamable HTTP endpoint.
    Http {
        /// The endpoint URL.
        url: String,
        /// Headers sent with every request (e.g. `Authorization`).
        headers: BTreeMap<String, String>,
    },
}

/// Marks the cached tool list stale on `notifications/tools/list_changed`.
#[derive(Clone)]
struct Notifications {
    server: String,
    stale: Arc<AtomicBool>,
}

impl ClientHandler for Notifications {
    fn on_tool_list_changed(
        &self,
        _context: NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.stale.store(true, Ordering::SeqCst);
        tracing::info!(server = %self.server, "MCP server's tool list changed");
        std::future::ready(())
    }
}

struct Connection {
    service: Option<RunningService<RoleClient, Notifications>>,
    failures: u32,
    next_start: Instant,
}

/// One MCP server under a namespace.
pub struct McpServer {
    namespace: String,
    transport: Transport,
    connection: Mutex<Connection>,
    tools: RwLock<Option<Arc<[ToolDef]>>>,
    stale: Arc<AtomicBool>,
}

impl McpServer {
    /// A server reached through `transport`; nothing starts until the first use.
    pub fn new(namespace: impl Into<String>, transport: Transport) -> Self {
        Self {
            namespace: namespace.into(),
            transport,
            connection: Mutex::new(Connection {
                service: None,
                failures: 0,
                next_start: Instant::now(),
            }),
            tools: RwLock::new(None),
            stale: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The live connection's peer, starting (or restarting) the server when there is none.
    async fn peer(&self) -> Result<Peer<RoleClient>, ToolError> {
        let mut conn = self.connection.lock().await;
        if let Some(service) = &conn.service {
            if !service.is_closed() {
                return Ok(service.peer().clone());
            }
            tracing::warn!(server = %self.namespace, "MCP server connection closed; restarting");
            conn.service = None;
            self.forget_tools();
        }
        tokio::time::sleep_until(conn.next_start.into()).await;
        match self.connect().await {
            Ok(service) => {
                tracing::info!(server = %self.namespace, "MCP server connected");
                conn.failures = 0;
                let peer = service.peer().clone();
                conn.service = Some(service);
                Ok(peer)
            }
            Err(e) => {
                conn.failures += 1;
                let backoff = Duration::from_millis(250 << conn.failures.min(7)).min(MAX_BACKOFF);
                conn.next_start = Instant::now() + backoff;
                tracing::warn!(server = %self.namespace, error = %e, retry_in_ms = backoff.as_millis() as u64, "MCP server failed to start");
                Err(ToolError::Unavailable(format!(
                    "MCP server {:?} cannot be reached: {e}",
                    self.namespace
                )))
            }
        }
    }

    async fn connect(&self) -> Result<RunningService<RoleClient, Notifications>, String> {
        let handler = Notifications {
            server: self.namespace.clone(),
            stale: self.stale.clone(),
        };
        match &self.transport {
            Transport::Stdio { command, args, env } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env);
                let (process, _) = TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::inherit())
                    .spawn()
                    .map_err(|e| format!("cannot start {command:?}: {e}"))?;
                handler.serve(process).await.map_err(|e| e.to_string())
            }
            Transport::Http { url, headers } => {
                let mut custom = HashMap::new();
                for (k, v) in headers {
                    let name = http::HeaderName::try_from(k.as_str())
                        .map_err(|e| format!("header name {k:?}: {e}"))?;
                    let value = http::HeaderValue::try_from(v.as_str())
                        .map_err(|e| format!("header {k:?}: {e}"))?;
                    custom.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(custom);
                let transport = StreamableHttpClientTransport::from_config(config);
                handler.serve(transport).await.map_err(|e| e.to_string())
            }
        }
    }

    fn forget_tools(&self) {
        *self.tools.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Drops the connection after a transport failure, so the next call restarts the server.
    async fn drop_connection(&self) {
        let mut conn = self.connection.lock().await;
        if let Some(service) = conn.service.take() {
            // Kills a child process that is still there (a hung server).
            let _ = service.cancel().await;
        }
        self.forget_tools();
    }

    fn failed(&self, e: rmcp::ServiceError) -> ToolError {
        ToolError::Failed(format!("MCP server {:?}: {e}", self.namespace))
    }
}

/// Whether the error means the connection is gone (rather than the server refusing a request).
fn is_transport(e: &rmcp::ServiceError) -> bool {
    matches!(
        e,
        rmcp::ServiceError::TransportClosed
            | rmcp::ServiceError::TransportSend(_)
            | rmcp::ServiceError::Timeout { .. }
    )
}

impl ToolProvider for McpServer {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn list(&self) -> BoxFuture<'_, Result<Arc<[ToolDef]>, ToolError>> {
        async move {
            if !self.stale.swap(false, Ordering::SeqCst)
                && let Some(tools) = self.tools.read().unwrap_or_else(|e| e.into_inner()).clone()
            {
                return Ok(tools);
            }
            let peer = self.peer().await?;
            let listed = match peer.list_all_tools().await {
                Ok(listed) => listed,
                Err(e) => {
                    if is_transport(&e) {
                        self.drop_connection().await;
                    }
                    return Err(self.failed(e));
                }
            };
            let tools: Arc<[ToolDef]> = listed
                .into_iter()
                .map(|t| ToolDef {
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    input_schema: Value::Object((*t.input_schema).clone()),
                })
                .collect();
            *self.tools.write().unwrap_or_else(|e| e.into_inner()) = Some(tools.clone());
            Ok(tools)
        }
        .boxed()
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
        _context: &'a CallContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        async move {
            let peer = self.peer().await?;
            let Value::Object(arguments) = arguments else {
                return Err(ToolError::InvalidArguments(
                    "arguments must be a JSON object".into(),
                ));
            };
            let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
            tracing::debug!(server = %self.namespace, tool, "sending tools/call");
            let result = match peer.call_tool(params).await {
                Ok(result) => result,
                Err(e) => {
                    if is_transport(&e) {
                        self.drop_connection().await;
                    }
                    return Err(self.failed(e));
                }
            };
            Ok(ToolOutput {
                content: result.content.iter().map(content).collect(),
                structured: result.structured_content,
                is_error: result.is_error.unwrap_or(false),
            })
        }
        .boxed()
    }
}

/// MCP content as ours: text stays text; anything else (images, resources) as its JSON.
fn content(block: &ContentBlock) -> Content {
    match block.as_text() {
        Some(text) => Content::Text(text.text.clone()),
        None => Content::Json(serde_json::to_value(block).unwrap_or(Value::Null)),
    }
}
