//! The WASM host: the wasmtime engine, the loaded revisions (an `InstancePre` each), and
//! invocations on a fresh instance per request.
//!
//! An invocation starts on the caller's task: most guests answer within that first poll (tens of
//! µs), and handing every call to another thread would cost more than the call itself (a
//! cross-core wake-up each way). A guest that does not finish in its first slice — it yielded
//! at an epoch tick, waits for the model, or waits for a free instance slot — is moved, as the
//! same future, to a dedicated guest runtime, so a busy guest delays the server's own workers
//! by at most one [`engine::EPOCH_TICK`] (`/healthz` stays prompt while every function slot is
//! busy). Each invocation gets a new `Store` with the manifest's memory limit and a deadline
//! enforced by epoch interruption (checked every tick, yielding to the executor at each tick)
//! plus a timer for time spent in host calls.
//!
//! # Layout
//!
//! - this module: the [`Host`] (engine, linker, the revisions serving now);
//! - `revisions`: loading at start, deploy, rollback, delete;
//! - `invoke`: an invocation on a fresh instance (`handle`, `on-event`), its store and limits;
//! - `engine`, `component`, `functions_dir`: the wasmtime engine, precompiled components, the
//!   read-only functions dir of cluster mode;
//! - `state` (a store's `HostState`) and one module per WIT capability (the bindings are
//!   [`crate::wit`]): `inference` (+ `tool_chat`), `kv`, `events`, `tools` (+
//!   `tool_component`), `output` (guest stdout/stderr).

mod admission;
mod component;
mod engine;
mod error;
mod events;
mod functions_dir;
pub(crate) mod inference;
mod invoke;
mod kv;
mod output;
mod revisions;
mod slots;
mod state;
mod tool_chat;
mod tool_component;
mod tools;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

use tokio::sync::{Mutex, Semaphore};
use wasmtime::Engine;
use wasmtime::component::Linker;

pub use crate::wit::slmfn::agent::types::{Cloudevent, Request, Response};
pub use admission::{Admitted, HostLimits};
pub use error::{GuestError, HostError, Result};
pub use functions_dir::{DirReport, precompile_dir};

use component::Pre;
use state::HostState;

use crate::events::sink::Sink;
use crate::inference::Inference;
use crate::registry::{Registry, RevisionRecord};
use crate::tools::{Grants, ToolDef, Toolbox};

/// A revision ready to serve: pre-instantiated component and its limits.
struct LoadedRevision {
    record: RevisionRecord,
    pre: Pre,
    /// Instance slots: `max_concurrency` permits.
    slots: Arc<Semaphore>,
    /// Calls waiting for a slot or memory.
    waiting: admission::Waiting,
    env: Vec<(String, String)>,
    /// The tools the manifest grants.
    grants: Arc<Grants>,
    /// A tool component's tools, listed once per revision.
    tools: tokio::sync::OnceCell<Arc<[ToolDef]>>,
    models: Arc<crate::manifest::ModelsSection>,
    /// The function's kv namespace under its quota, opened once per revision rather than per
    /// request.
    kv: crate::registry::KvNamespace,
}

/// The host. Process-lifetime state, shared as `Arc<Host>`.
pub struct Host {
    engine: Engine,
    linker: Linker<HostState>,
    engine_key: String,
    registry: Registry,
    loaded: RwLock<HashMap<String, Arc<LoadedRevision>>>,
    /// Serializes registry commits with the swap of the loaded revision, so the loaded one is
    /// always the registry's current one (compilation happens outside it).
    commit_lock: Mutex<()>,
    /// The process-wide bounds.
    limits: HostLimits,
    /// The guest memory budget.
    memory: admission::MemoryBudget,
    /// Bounds concurrent compilations to the cores.
    compile_permits: Semaphore,
    /// Components compiled since start (not loaded from an artifact).
    compilations: std::sync::atomic::AtomicUsize,
    sink: Option<Arc<Sink>>,
    inference: Option<Arc<Inference>>,
    toolbox: Arc<Toolbox>,
    /// This host, for the tool providers it registers (they must not keep it alive).
    me: Weak<Host>,
    guests: Option<tokio::runtime::Runtime>,
    _epoch: engine::EpochTicker,
}

impl Host {
    /// Builds the engine and linker. Loads nothing yet: see [`Host::load_all`]. Without an
    /// inference service, the WIT `inference` calls answer `unavailable`. `limits` bound what
    /// waits and the guest memory of all instances together (see [`Host::admit`]). Deployed tool
    /// components join `toolbox` as providers under their function names.
    pub fn new(
        registry: Registry,
        sink: Option<Arc<Sink>>,
        inference: Option<Arc<Inference>>,
        toolbox: Arc<Toolbox>,
        limits: HostLimits,
    ) -> Result<Arc<Self>> {
        let internal = |e: wasmtime::Error| HostError::Internal(format!("{e:#}"));
        let engine = engine::new_engine().map_err(internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        state::add_to_linker(&mut linker).map_err(internal)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let guests = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("slmfn-guest")
            .enable_all()
            .build()
            .map_err(|e| HostError::Internal(format!("cannot start the guest runtime: {e}")))?;
        Ok(Arc::new_cyclic(|me| Self {
            engine_key: engine::compatibility_key(&engine),
            _epoch: engine::EpochTicker::start(engine.clone()),
            engine,
            linker,
            registry,
            loaded: RwLock::default(),
            commit_lock: Mutex::new(()),
            memory: admission::MemoryBudget::new(&limits),
            limits,
            compile_permits: Semaphore::new(cores),
            compilations: Default::default(),
            sink,
            inference,
            toolbox,
            me: me.clone(),
            guests: Some(guests),
        }))
    }

    /// The registry this host serves from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tool providers (operator's and deployed tool components).
    pub fn toolbox(&self) -> &Arc<Toolbox> {
        &self.toolbox
    }

    /// How many components were compiled since start, rather than loaded precompiled.
    pub fn compilations(&self) -> usize {
        self.compilations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The compatibility key under which this engine's precompiled artifacts are stored.
    pub fn engine_key(&self) -> &str {
        &self.engine_key
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // A runtime may not be dropped inside async context; let its threads wind down alone.
        if let Some(rt) = self.guests.take() {
            rt.shutdown_background();
        }
    }
}
