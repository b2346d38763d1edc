//! Deployed tool components (`kind = "tool"`) as a [`ToolProvider`]: the function's name is
//! the namespace, `list-tools` is asked once per revision, and every call runs on a fresh
//! instance with the tool function's own memory limit, deadline, concurrency slots and kv
//! namespace. A trap or a deadline fails that call only, as a tool error.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;
use wasmtime::{Store, Trap};

use crate::host::component::Pre;
use crate::host::invoke::trap_message;
use crate::host::output::{GuestOutput, Stream};
use crate::host::state::HostState;
use crate::host::{Host, LoadedRevision};
use crate::tools::{
    CallContext, Content, ToolDef, ToolError, ToolOutput, ToolProvider, check_schema,
};
use crate::wit::provider::ToolProvider as ProviderInstance;
use crate::wit::slmfn::agent::tools as wit;

/// The tools of one deployed tool component (whatever its current revision).
pub(super) struct ComponentTools {
    namespace: String,
    host: Weak<Host>,
}

impl ComponentTools {
    pub(super) fn new(name: &str, host: Weak<Host>) -> Self {
        Self {
            namespace: name.to_string(),
            host,
        }
    }

    fn revision(&self) -> Result<(Arc<Host>, Arc<LoadedRevision>), ToolError> {
        let gone = || {
            ToolError::Unavailable(format!(
                "tool component {:?} is not deployed",
                self.namespace
            ))
        };
        let host = self.host.upgrade().ok_or_else(gone)?;
        let loaded = host
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.namespace)
            .cloned()
            .ok_or_else(gone)?;
        Ok((host, loaded))
    }
}

impl ToolProvider for ComponentTools {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn list(&self) -> BoxFuture<'_, Result<Arc<[ToolDef]>, ToolError>> {
        async move {
            let (host, loaded) = self.revision()?;
            host.component_tools(&loaded).await
        }
        .boxed()
    }

    fn call<'a>(
        &'a self,
        tool: &'a str,
        arguments: Value,
        context: &'a CallContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        async move {
            let (host, loaded) = self.revision()?;
            host.call_component_tool(&loaded, tool, &arguments, context.deadline)
                .await
        }
        .boxed()
    }
}

/// A fresh instance of a tool component, with what its failures need.
struct Instance {
    store: Store<HostState>,
    provider: ProviderInstance,
    stderr: GuestOutput,
    deadline: Instant,
    /// Its share of the guest memory budget.
    _memory: tokio::sync::OwnedSemaphorePermit,
}

impl Host {
    /// The revision's tools, asked of the component once and checked: names unique and without
    /// `.`, schemas JSON Schema documents the validator accepts.
    pub(super) async fn component_tools(
        &self,
        loaded: &LoadedRevision,
    ) -> Result<Arc<[ToolDef]>, ToolError> {
        loaded
            .tools
            .get_or_try_init(|| async {
                let name = loaded.record.function.as_str();
                let _permit = loaded.slots.clone().acquire_owned().await;
                let mut instance = self.tool_instance(loaded, None).await?;
                let listed = tokio::time::timeout_at(
                    instance.deadline.into(),
                    instance
                        .provider
                        .slmfn_agent_provider()
                        .call_list_tools(&mut instance.store),
                )
                .await;
                let listed = self.tool_outcome(loaded, &instance, listed)?;
                let mut defs: Vec<ToolDef> = Vec::with_capacity(listed.len());
                for tool in listed {
                    let bad = |what: String| {
                        ToolError::Failed(format!(
                            "tool component {name:?}, tool {:?}: {what}",
                            tool.name
                        ))
                    };
                    if tool.name.is_empty() || tool.name.contains('.') {
                        return Err(bad("a tool name must be non-empty and without '.'".into()));
                    }
                    if defs.iter().any(|d| d.name == tool.name) {
                        return Err(bad("the name is listed twice".into()));
                    }
                    let schema: Value = serde_json::from_str(&tool.input_schema)
                        .map_err(|e| bad(format!("the input schema is not JSON: {e}")))?;
                    check_schema(&schema)
                        .map_err(|e| bad(format!("the input schema is unusable: {e}")))?;
                    defs.push(ToolDef {
                        name: tool.name,
                        description: tool.description,
                        input_schema: schema,
                    });
                }
                Ok(defs.into())
            })
            .await
            .cloned()
    }

    async fn call_component_tool(
        &self,
        loaded: &LoadedRevision,
        tool: &str,
        arguments: &Value,
        deadline: Option<Instant>,
    ) -> Result<ToolOutput, ToolError> {
        let name = loaded.record.function.as_str();
        let limits = &loaded.record.manifest.limits;
        let wait = Duration::from_millis(limits.timeout_ms);
        let _permit = tokio::time::timeout(wait, loaded.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                ToolError::Unavailable(format!(
                    "tool component {name:?} is at its concurrency limit of {}",
                    limits.max_concurrency
                ))
            })?;
        let mut instance = self.tool_instance(loaded, deadline).await?;
        let arguments = arguments.to_string();
        let called = tokio::time::timeout_at(
            instance.deadline.into(),
            instance.provider.slmfn_agent_provider().call_call_tool(
                &mut instance.store,
                tool,
                &arguments,
            ),
        )
        .await;
        match self.tool_outcome(loaded, &instance, called)? {
            Ok(result) => output(name, result),
            Err(e) => Err(super::tools::from_wit(e)),
        }
    }

    /// A fresh instance under the tool function's limits; its deadline is the function's
    /// timeout or the caller's, whichever comes first.
    async fn tool_instance(
        &self,
        loaded: &LoadedRevision,
        caller_deadline: Option<Instant>,
    ) -> Result<Instance, ToolError> {
        let name = loaded.record.function.as_str();
        let Pre::Tool(pre) = &loaded.pre else {
            return Err(ToolError::Unavailable(format!(
                "{name:?} is not a tool component"
            )));
        };
        let memory = self.tool_memory(loaded).ok_or_else(|| {
            ToolError::Unavailable(format!(
                "tool component {name:?} cannot start: the guest memory budget is taken by running instances"
            ))
        })?;
        let own = Instant::now() + Duration::from_millis(loaded.record.manifest.limits.timeout_ms);
        let deadline = caller_deadline.map_or(own, |d| d.min(own));
        let invocation: Arc<str> = Uuid::now_v7().to_string().into();
        let stderr = GuestOutput::new(name.into(), invocation.clone(), Stream::Stderr);
        let mut store = self
            .new_store(loaded, invocation, stderr.clone(), deadline)
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        let provider =
            match tokio::time::timeout_at(deadline.into(), pre.instantiate_async(&mut store)).await
            {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    return Err(ToolError::Failed(format!(
                        "tool component {name:?} failed to start: {}",
                        trap_message(&e, &stderr)
                    )));
                }
                Err(_) => {
                    return Err(ToolError::Failed(format!(
                        "tool component {name:?} exceeded its deadline"
                    )));
                }
            };
        Ok(Instance {
            store,
            provider,
            stderr,
            deadline,
            _memory: memory,
        })
    }

    /// A call's outcome: traps and deadlines as tool errors naming the component.
    fn tool_outcome<T>(
        &self,
        loaded: &LoadedRevision,
        instance: &Instance,
        outcome: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, ToolError> {
        let name = loaded.record.function.as_str();
        let exceeded = || {
            ToolError::Failed(format!(
                "tool component {name:?} exceeded its deadline ({} ms)",
                loaded.record.manifest.limits.timeout_ms
            ))
        };
        match outcome {
            Err(_) => Err(exceeded()),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => Err(exceeded()),
            Ok(Err(e)) => {
                tracing::warn!(function = name, error = ?e, "tool component trapped");
                Err(ToolError::Failed(format!(
                    "tool component {name:?} trapped: {}",
                    trap_message(&e, &instance.stderr)
                )))
            }
        }
    }
}

/// A component's answer as a toolbox answer; structured content must be JSON.
fn output(name: &str, result: wit::ToolResult) -> Result<ToolOutput, ToolError> {
    let structured = match result.structured {
        None => None,
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            ToolError::Failed(format!(
                "tool component {name:?} answered structured content that is not JSON: {e}"
            ))
        })?),
    };
    Ok(ToolOutput {
        content: result
            .content
            .into_iter()
            .map(|c| match c {
                wit::Content::Text(t) => Content::Text(t),
                wit::Content::Json(t) => {
                    serde_json::from_str(&t).map_or(Content::Text(t), Content::Json)
                }
            })
            .collect(),
        structured,
        is_error: result.is_error,
    })
}
