//! Components: upload checks, precompilation, loading precompiled artifacts, world checks.

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::host::error::{HostError, Result};
use crate::host::state::HostState;
use crate::manifest::Kind;
use crate::wit::AgentPre;
use crate::wit::provider::ToolProviderPre;

/// The version of the `slmfn:agent` package this runtime links (`sdk/wit`).
pub(crate) const CONTRACT_VERSION: &str = "0.2.0";

/// The export every agent must have.
pub(crate) const HANDLER_EXPORT: &str = "slmfn:agent/handler@0.2.0";

/// Rejects bytes that are not a component, naming what they are instead.
pub(crate) fn check_binary(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(HostError::InvalidComponent(
            "not a WebAssembly binary (no \\0asm header); upload the .wasm that `fn build` produced".into(),
        ));
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(HostError::InvalidComponent(
            "this is a core WebAssembly module, not a component: build for the wasm32-wasip2 target \
             (`fn build`) or wrap it with `wasm-tools component new`"
                .into(),
        ));
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(HostError::InvalidComponent(
            "unknown WebAssembly binary version/layer".into(),
        ));
    }
    Ok(())
}

/// Compiles a component to this engine's native artifact (CPU-heavy: call off the async workers).
pub(crate) fn precompile(engine: &Engine, bytes: &[u8]) -> Result<Vec<u8>> {
    engine
        .precompile_component(bytes)
        .map_err(|e| HostError::InvalidComponent(format!("{e:#}")))
}

/// Loads an artifact made by [`precompile`] on an engine with the same compatibility key.
/// `None` when the artifact does not fit this engine (then recompile).
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Option<Component> {
    // SAFETY: artifacts come only from `precompile` on an engine with the same compatibility
    // key, stored in the runtime's own registry behind their SHA-256, which the registry
    // checks before handing them out (a corrupted entry is dropped and the component compiled
    // again); wasmtime additionally checks the header and engine compatibility and returns an
    // error (not UB) for mismatched artifacts.
    match unsafe { Component::deserialize(engine, artifact) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "precompiled artifact unusable; recompiling");
            None
        }
    }
}

/// The export every tool component must have.
pub(crate) const PROVIDER_EXPORT: &str = "slmfn:agent/provider@0.2.0";

/// A component ready to instantiate, by the world it implements.
pub(crate) enum Pre {
    /// An agent (`kind = "agent"`).
    Agent(AgentPre<HostState>),
    /// A tool component (`kind = "tool"`).
    Tool(ToolProviderPre<HostState>),
}

/// Checks the component against the world of its manifest's `kind`: every import provided,
/// the world's exports there.
pub(crate) fn pre_instantiate(
    linker: &Linker<HostState>,
    component: &Component,
    kind: Kind,
) -> Result<Pre> {
    if let Some(version) = older_contract(linker.engine(), component) {
        return Err(HostError::InvalidComponent(format!(
            "the component was built against slmfn:agent@{version}, and this runtime speaks \
             slmfn:agent@{CONTRACT_VERSION}: rebuild it with slmfn-sdk {CONTRACT_VERSION} \
             (`fn build`); the source needs no change"
        )));
    }
    let pre = linker.instantiate_pre(component).map_err(|e| {
        HostError::InvalidComponent(format!(
            "the component does not fit the slmfn:agent worlds: {e:#} (only slmfn:agent and wasi:cli/io/clocks/random/filesystem/sockets 0.2 imports are provided)"
        ))
    })?;
    let exports_provider = component.get_export_index(None, PROVIDER_EXPORT).is_some();
    match kind {
        Kind::Agent => AgentPre::new(pre).map(Pre::Agent).map_err(|e| {
            let hint = if exports_provider {
                "; it exports the tool-provider world: set kind = \"tool\" in fn.toml"
            } else {
                ""
            };
            HostError::InvalidComponent(format!(
                "the component is not an slmfn agent: it must export {HANDLER_EXPORT} (and slmfn:agent/event-handler@0.2.0); build it with slmfn-sdk's `export_agent!` ({e:#}){hint}"
            ))
        }),
        Kind::Tool => ToolProviderPre::new(pre).map(Pre::Tool).map_err(|e| {
            HostError::InvalidComponent(format!(
                "fn.toml says kind = \"tool\", but the component does not export {PROVIDER_EXPORT}; build it with slmfn-sdk's `export_tools!` ({e:#})"
            ))
        }),
    }
}

/// The `slmfn:agent` version a component imports or exports when it is not one this runtime
/// links (wasmtime matches 0.2.x to 0.2.0 by semver; 0.1.x is a different contract).
fn older_contract(engine: &Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(name, _)| name.to_string());
    let exports = ty.exports(engine).map(|(name, _)| name.to_string());
    imports.chain(exports).find_map(|name| {
        let version = name.strip_prefix("slmfn:agent/")?.split_once('@')?.1;
        (!version.starts_with("0.2.")).then(|| version.to_string())
    })
}
