//! The providers of the process under their namespaces, and the one path every call takes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use crate::tools::schema::Validators;
use crate::tools::{
    CallContext, Grants, Tool, ToolDef, ToolError, ToolMetrics, ToolOutput, ToolProvider,
};

/// How long a `list` of one provider may take before it is left out of a listing.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Every tool provider of the process (see the module docs).
pub struct Toolbox {
    providers: RwLock<BTreeMap<String, Arc<dyn ToolProvider>>>,
    /// Namespaces the operator configured: a deployed tool component may not take them.
    reserved: BTreeSet<String>,
    /// Namespaces the operator forbids to every caller.
    forbidden: BTreeSet<String>,
    call_timeout: Duration,
    validators: Validators,
    metrics: ToolMetrics,
}

impl Toolbox {
    /// A toolbox with the operator's providers (`reserved` namespaces), `forbidden` namespaces
    /// and the longest time one call may take.
    pub fn new(
        providers: Vec<Arc<dyn ToolProvider>>,
        forbidden: BTreeSet<String>,
        call_timeout: Duration,
    ) -> Self {
        let providers: BTreeMap<String, Arc<dyn ToolProvider>> = providers
            .into_iter()
            .map(|p| (p.namespace().to_string(), p))
            .collect();
        Self {
            reserved: providers.keys().cloned().collect(),
            providers: RwLock::new(providers),
            forbidden,
            call_timeout,
            validators: Validators::default(),
            metrics: ToolMetrics::default(),
        }
    }

    /// A toolbox without operator providers (tool components only).
    pub fn empty() -> Self {
        Self::new(Vec::new(), BTreeSet::new(), Duration::from_secs(30))
    }

    /// The metrics every call records into.
    pub fn metrics(&self) -> &ToolMetrics {
        &self.metrics
    }

    /// Whether `namespace` belongs to an operator-configured provider.
    pub fn is_reserved(&self, namespace: &str) -> bool {
        self.reserved.contains(namespace)
    }

    /// Adds or replaces a provider that is not the operator's (a deployed tool component).
    /// Refused for an operator namespace.
    pub fn register(&self, provider: Arc<dyn ToolProvider>) -> Result<(), ToolError> {
        let namespace = provider.namespace().to_string();
        if self.is_reserved(&namespace) {
            return Err(ToolError::Unavailable(format!(
                "the tool namespace {namespace:?} belongs to a provider the operator configured"
            )));
        }
        self.write().insert(namespace, provider);
        Ok(())
    }

    /// Removes a provider added with [`Toolbox::register`].
    pub fn unregister(&self, namespace: &str) {
        if !self.is_reserved(namespace) {
            self.write().remove(namespace);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<dyn ToolProvider>>> {
        self.providers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn provider(&self, namespace: &str) -> Option<Arc<dyn ToolProvider>> {
        if self.forbidden.contains(namespace) {
            return None;
        }
        self.providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
    }

    /// The tools `grants` allows, sorted by name. A provider that cannot list now (a crashed
    /// MCP server) is left out and logged; the others still answer.
    pub async fn list(&self, grants: &Grants) -> Vec<Tool> {
        if grants.is_empty() {
            return Vec::new();
        }
        let providers: Vec<Arc<dyn ToolProvider>> = self
            .providers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(ns, _)| !self.forbidden.contains(*ns))
            .map(|(_, p)| p.clone())
            .collect();
        let mut tools = Vec::new();
        for provider in providers {
            let namespace = provider.namespace().to_string();
            let defs = match tokio::time::timeout(LIST_TIMEOUT, provider.list()).await {
                Ok(Ok(defs)) => defs,
                Ok(Err(e)) => {
                    tracing::warn!(provider = %namespace, error = %e, "tool provider cannot list its tools");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(provider = %namespace, "tool provider did not list its tools in time");
                    continue;
                }
            };
            tools.extend(
                defs.iter()
                    .map(|d| full(&namespace, d))
                    .filter(|t| grants.allows(&t.name)),
            );
        }
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// Calls the tool `name` (`provider.tool`) with JSON `arguments`, for a caller holding
    /// `grants` (see the module docs for the checks on the way).
    pub async fn call(
        &self,
        grants: &Grants,
        name: &str,
        arguments: &str,
        context: &CallContext,
    ) -> Result<ToolOutput, ToolError> {
        let function = context.function.as_deref().unwrap_or("");
        let span = tracing::info_span!(
            "tool_call",
            tool = name,
            function,
            invocation = context.invocation.as_deref().unwrap_or(""),
        );
        let started = Instant::now();
        let (outcome, tool_label, result) = async {
            match self.prepare(grants, name, arguments).await {
                Err(e) => (outcome(&Err(e.clone())), "", Err(e)),
                Ok((provider, tool, arguments)) => {
                    let result = self.run(&*provider, &tool, name, arguments, context).await;
                    if let Err(e) = &result {
                        tracing::warn!(error = %e, "tool call failed");
                    }
                    (outcome(&result), name, result)
                }
            }
        }
        .instrument(span)
        .await;
        let elapsed = (!tool_label.is_empty()).then(|| started.elapsed());
        self.metrics.record(function, tool_label, outcome, elapsed);
        result
    }

    /// Checks `arguments` against `schema` for the tool `name` (for callers that run
    /// something else than a provider, e.g. an agent called over `/mcp`).
    pub fn validate(&self, name: &str, schema: &Value, arguments: &Value) -> Result<(), ToolError> {
        self.validators.check(name, schema, arguments)
    }

    /// The provider, the tool's own name and the validated arguments, or why the call may not
    /// go ahead.
    async fn prepare(
        &self,
        grants: &Grants,
        name: &str,
        arguments: &str,
    ) -> Result<(Arc<dyn ToolProvider>, String, Value), ToolError> {
        // One message for "does not exist" and "not granted": no existence leak.
        let not_found = || {
            ToolError::NotFound(format!(
                "tool {name:?} not found (no such tool, or not granted to this caller: see [tools] allowed in fn.toml)"
            ))
        };
        let (namespace, tool) = name.split_once('.').ok_or_else(not_found)?;
        if !grants.allows(name) {
            return Err(not_found());
        }
        let provider = self.provider(namespace).ok_or_else(not_found)?;
        let defs = provider.list().await?;
        let def = defs.iter().find(|d| d.name == tool).ok_or_else(not_found)?;
        let arguments: Value = if arguments.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_str(arguments).map_err(|e| {
                ToolError::InvalidArguments(format!("arguments of {name:?} are not JSON: {e}"))
            })?
        };
        if !arguments.is_object() {
            return Err(ToolError::InvalidArguments(format!(
                "arguments of {name:?} must be a JSON object"
            )));
        }
        self.validators.check(name, &def.input_schema, &arguments)?;
        Ok((provider, tool.to_string(), arguments))
    }

    async fn run(
        &self,
        provider: &dyn ToolProvider,
        tool: &str,
        name: &str,
        arguments: Value,
        context: &CallContext,
    ) -> Result<ToolOutput, ToolError> {
        let mut limit = self.call_timeout;
        if let Some(deadline) = context.deadline {
            limit = limit.min(deadline.saturating_duration_since(Instant::now()));
        }
        match tokio::time::timeout(limit, provider.call(tool, arguments, context)).await {
            Ok(result) => result,
            Err(_) => Err(ToolError::Failed(format!(
                "tool {name:?} did not answer within {} ms",
                limit.as_millis()
            ))),
        }
    }
}

fn full(namespace: &str, def: &ToolDef) -> Tool {
    Tool {
        name: format!("{namespace}.{}", def.name),
        description: def.description.clone(),
        input_schema: def.input_schema.clone(),
    }
}

fn outcome(result: &Result<ToolOutput, ToolError>) -> &'static str {
    match result {
        Ok(out) if out.is_error => "tool_error",
        Ok(_) => "ok",
        Err(ToolError::NotFound(_)) => "not_found",
        Err(ToolError::InvalidArguments(_)) => "invalid_arguments",
        Err(ToolError::Unavailable(_)) => "unavailable",
        Err(ToolError::Failed(_)) => "failed",
    }
}
