//! Per-invocation store data: one field per capability. Cheap to build (no I/O, `Arc` clones).

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::host::events::EventsCtx;
use crate::host::inference::InferenceCtx;
use crate::host::kv::KvCtx;
use crate::host::tools::ToolsCtx;

/// The data of one invocation's `Store`.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Memory and instance limits from the manifest.
    pub(crate) limits: StoreLimits,
    pub(crate) kv: KvCtx,
    pub(crate) inference: InferenceCtx,
    pub(crate) tools: ToolsCtx,
    pub(crate) events: EventsCtx,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::host::bindings::slmfn::agent::types::Host for HostState {}
