//! Host bindings generated once from `sdk/wit` (the one source of truth).

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "agent",
    imports: { default: async },
    exports: { default: async },
    with: {
        "slmfn:agent/inference.completion-stream": crate::host::inference::CompletionStream,
    },
});

/// The `tool-provider` world: tool components. The interfaces it shares with `agent` are the
/// same Rust types, so one linker serves both worlds.
pub(crate) mod provider {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "tool-provider",
        imports: { default: async },
        exports: { default: async },
        with: {
            "slmfn:agent/kv": crate::host::bindings::slmfn::agent::kv,
            "slmfn:agent/tools": crate::host::bindings::slmfn::agent::tools,
        },
    });
}
