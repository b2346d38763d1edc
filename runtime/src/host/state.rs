//! Per-invocation store data: one field per capability, each capability's WIT interface
//! implemented on its own ctx (or view) and linked to its field here, as wasmtime's own
//! `wasi-config` does. Cheap to build (no I/O, `Arc` clones).

use wasmtime::StoreLimits;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::host::events::EventsCtx;
use crate::host::inference::{HasInference, InferenceCtx, InferenceView};
use crate::host::kv::KvCtx;
use crate::host::tools::ToolsCtx;
use crate::wit::slmfn::agent::{events, inference, kv, tools, types};

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

impl types::Host for HostState {}

/// Links the `slmfn:agent` interfaces (WASI is linked apart), each to its capability's field.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    types::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    kv::add_to_linker::<HostState, HasSelf<KvCtx>>(linker, |s| &mut s.kv)?;
    events::add_to_linker::<HostState, HasSelf<EventsCtx>>(linker, |s| &mut s.events)?;
    tools::add_to_linker::<HostState, HasSelf<ToolsCtx>>(linker, |s| &mut s.tools)?;
    inference::add_to_linker::<HostState, HasInference>(linker, |s| InferenceView {
        ctx: &mut s.inference,
        table: &mut s.table,
    })
}
