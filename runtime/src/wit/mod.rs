//! Host bindings generated once from `sdk/wit` (the one source of truth), shared by the host
//! (which implements the imports) and the events (whose `cloudevent` record it is).

mod completion_stream;

#[allow(unreachable_pub)] // bindgen's `with` re-exports it
pub use completion_stream::CompletionStream;

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "agent",
    // The calls that use the resource table trap when it fails (a host bug, or a guest
    // holding more streams than the table takes), rather than answering a WIT error.
    imports: {
        default: async,
        "slmfn:agent/inference.chat-stream": async | trappable,
        "slmfn:agent/inference.[method]completion-stream.next": async | trappable,
        "slmfn:agent/inference.[method]completion-stream.finish": async | trappable,
    },
    exports: { default: async },
    with: {
        "slmfn:agent/inference.completion-stream": crate::wit::CompletionStream,
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
            "slmfn:agent/kv": crate::wit::slmfn::agent::kv,
            "slmfn:agent/tools": crate::wit::slmfn::agent::tools,
        },
    });
}
