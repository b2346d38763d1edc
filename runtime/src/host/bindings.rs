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
