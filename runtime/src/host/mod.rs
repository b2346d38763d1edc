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

mod bindings;
mod component;
mod engine;
mod error;
mod events;
mod functions_dir;
pub(crate) mod inference;
mod kv;
mod output;
mod state;
mod tool_chat;
mod tool_component;
mod tools;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Mutex, Semaphore};
use tracing::Instrument;
use uuid::Uuid;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

pub use bindings::slmfn::agent::types::{Cloudevent, Request, Response};
pub use error::{GuestError, HostError, Result};
pub use functions_dir::{DirReport, precompile_dir};

use bindings::Agent;
use bindings::slmfn::agent::types::Error as WitGuestError;
use component::Pre;
use output::{GuestOutput, Stream};
use state::HostState;

use crate::events::sink::Sink;
use crate::inference::Inference;
use crate::manifest::{Kind, Manifest};
use crate::registry::{NewRevision, Registry, RevisionRecord, sha256_hex};
use crate::tools::{Grants, ToolDef, Toolbox};

/// A revision ready to serve: pre-instantiated component and its limits.
struct LoadedRevision {
    record: RevisionRecord,
    pre: Pre,
    /// Instance slots: `max_concurrency` permits.
    slots: Arc<Semaphore>,
    env: Vec<(String, String)>,
    /// The tools the manifest grants.
    grants: Arc<Grants>,
    /// A tool component's tools, listed once per revision.
    tools: tokio::sync::OnceCell<Arc<[ToolDef]>>,
    models: Arc<crate::manifest::ModelsSection>,
    /// The function's kv namespace, opened once per revision rather than per request.
    kv: sled::Tree,
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
    /// inference service, the WIT `inference` calls answer `unavailable`. Deployed tool
    /// components join `toolbox` as providers under their function names.
    pub fn new(
        registry: Registry,
        sink: Option<Arc<Sink>>,
        inference: Option<Arc<Inference>>,
        toolbox: Arc<Toolbox>,
    ) -> Result<Arc<Self>> {
        let internal = |e: wasmtime::Error| HostError::Internal(format!("{e:#}"));
        let engine = engine::new_engine().map_err(internal)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(internal)?;
        Agent::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(internal)?;
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

    /// Loads the current revision of every function (artifacts are deserialized, not compiled,
    /// unless the engine changed). A function that fails to load is logged and skipped.
    pub async fn load_all(&self) -> Result<usize> {
        let functions = self.registry.list_functions()?;
        let mut count = 0;
        for f in functions {
            match self.load_revision(&f.name, f.current).await {
                Ok(loaded) => {
                    self.install(loaded);
                    count += 1;
                }
                Err(e) => tracing::error!(function = %f.name, error = %e, "cannot load function"),
            }
        }
        Ok(count)
    }

    /// Validates, precompiles and stores a new revision, then makes it current. On any error
    /// nothing changes: the previous revision keeps serving.
    pub async fn deploy(
        &self,
        name: &str,
        manifest_text: &str,
        component: &[u8],
    ) -> Result<RevisionRecord> {
        crate::manifest::validate_name(name)?;
        let manifest = Manifest::parse(manifest_text)?;
        if manifest.name != name {
            return Err(HostError::NameMismatch {
                manifest: manifest.name,
                path: name.to_string(),
            });
        }
        if manifest.kind == Kind::Tool && self.toolbox.is_reserved(name) {
            return Err(HostError::InvalidComponent(format!(
                "{name:?} is the namespace of a tool provider the operator configured; deploy the tool component under another name"
            )));
        }
        component::check_binary(component)?;
        let sha = sha256_hex(component);
        let compiled = self.compile_cached(&sha, component).await?;
        let pre = component::pre_instantiate(&self.linker, &compiled, manifest.kind)?;
        // Loaded under a provisional record until the registry assigns the revision.
        let provisional = RevisionRecord {
            function: name.to_string(),
            revision: Uuid::nil(),
            created_at: String::new(),
            component_sha256: sha.clone(),
            component_size: component.len() as u64,
            manifest: manifest.clone(),
        };
        let candidate = self.loaded(provisional, pre)?;
        // A tool component's list is checked before it replaces anything: its schemas must
        // be usable.
        if manifest.kind == Kind::Tool {
            self.component_tools(&candidate)
                .await
                .map_err(|e| HostError::InvalidComponent(e.to_string()))?;
        }
        let _guard = self.commit_lock.lock().await;
        let record = self
            .registry
            .commit_revision(NewRevision {
                manifest: &manifest,
                component,
                component_sha256: &sha,
            })
            .await?;
        self.install(candidate.with_record(record.clone()));
        tracing::info!(function = name, revision = %record.revision, size = component.len(), "deployed");
        Ok(record)
    }

    /// Makes an earlier revision current (the one before the current when `revision` is None).
    pub async fn rollback(&self, name: &str, revision: Option<Uuid>) -> Result<RevisionRecord> {
        let _guard = self.commit_lock.lock().await;
        let previous = self.registry.function(name)?.current;
        let record = self.registry.rollback(name, revision).await?;
        match self.load_revision(name, record.revision).await {
            Ok(loaded) => {
                self.install(loaded);
                tracing::info!(function = name, revision = %record.revision, "rolled back");
                Ok(record)
            }
            Err(e) => {
                // Keep registry and memory in agreement: point back at what serves now.
                let _ = self.registry.rollback(name, Some(previous)).await;
                Err(e)
            }
        }
    }

    /// Deletes a function with its revisions and kv namespace.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let _guard = self.commit_lock.lock().await;
        self.registry.delete(name).await?;
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.toolbox.unregister(name);
        tracing::info!(function = name, "deleted");
        Ok(())
    }

    /// The manifests of the agents serving now (not the tool components), sorted by name.
    pub fn agents(&self) -> Vec<Manifest> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut agents: Vec<Manifest> = loaded
            .values()
            .filter(|l| matches!(l.pre, Pre::Agent(_)))
            .map(|l| l.record.manifest.clone())
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        agents
    }

    /// The manifest of the agent `name` serving now (`None` for a tool component or no
    /// function).
    pub fn agent(&self, name: &str) -> Option<Manifest> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .get(name)
            .filter(|l| matches!(l.pre, Pre::Agent(_)))
            .map(|l| l.record.manifest.clone())
    }

    /// Whether the function is loaded and serving.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }

    /// Calls the function's `handle` on a fresh instance: its first slice on the caller's task,
    /// the rest (if any) on the guest runtime (see the module docs).
    pub async fn invoke(self: &Arc<Self>, name: &str, request: Request) -> Result<Response> {
        match self.enter(name, Entry::Http(request)).await? {
            Exit::Http(response) => Ok(response),
            Exit::Event(_) => unreachable!("an HTTP entry answers HTTP"),
        }
    }

    /// Calls the agent's `on-event` on a fresh instance, like [`Host::invoke`]; the result is
    /// its reply event, if any.
    pub async fn on_event(
        self: &Arc<Self>,
        name: &str,
        event: Cloudevent,
    ) -> Result<Option<Cloudevent>> {
        match self.enter(name, Entry::Event(event)).await? {
            Exit::Event(reply) => Ok(reply),
            Exit::Http(_) => unreachable!("an event entry answers with an event"),
        }
    }

    /// The agents serving now for which `select` says `Some`, with what it said, in name order
    /// (the events' trigger match, without cloning manifests).
    pub fn subscribers<T>(&self, select: impl Fn(&Manifest) -> Option<T>) -> Vec<(String, T)> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let mut hits: Vec<(String, T)> = loaded
            .iter()
            .filter(|(_, l)| matches!(l.pre, Pre::Agent(_)))
            .filter_map(|(name, l)| select(&l.record.manifest).map(|t| (name.clone(), t)))
            .collect();
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        hits
    }

    async fn enter(self: &Arc<Self>, name: &str, entry: Entry) -> Result<Exit> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::FunctionNotFound(name.to_string()))?;
        let host = self.clone();
        // A host bug that panics fails this request only, on either runtime.
        let mut call = Box::pin(
            AssertUnwindSafe(async move { host.run(loaded, entry).await })
                .catch_unwind()
                .map(|r| {
                    r.unwrap_or_else(|_| Err(HostError::Internal("the invocation panicked".into())))
                }),
        );
        if let Poll::Ready(result) = futures::poll!(call.as_mut()) {
            return result;
        }
        // Not done in one slice: finish on the guest runtime. The future moves as it is (its
        // timers and wakers re-register on the next poll there).
        let guests = self
            .guests
            .as_ref()
            .expect("guest runtime lives as long as the host");
        AbortOnDrop(guests.spawn(call)).await
    }

    async fn run(&self, loaded: Arc<LoadedRevision>, entry: Entry) -> Result<Exit> {
        let manifest = &loaded.record.manifest;
        let function = manifest.name.as_str();
        let timeout = Duration::from_millis(manifest.limits.timeout_ms);
        let deadline = Instant::now() + timeout;
        let deadline_error = || HostError::DeadlineExceeded {
            function: function.to_string(),
            timeout_ms: manifest.limits.timeout_ms,
        };
        let Pre::Agent(pre) = &loaded.pre else {
            return Err(HostError::NotAnAgent(function.to_string()));
        };
        let _permit = tokio::time::timeout(timeout, loaded.slots.clone().acquire_owned())
            .await
            .map_err(|_| HostError::Busy {
                function: function.to_string(),
                limit: manifest.limits.max_concurrency,
            })?
            .map_err(|_| HostError::Internal("instance slots closed".into()))?;
        let invocation: Arc<str> = Uuid::now_v7().to_string().into();
        let stderr = GuestOutput::new(function.into(), invocation.clone(), Stream::Stderr);
        let mut store = self.new_store(&loaded, invocation.clone(), stderr.clone(), deadline)?;
        let span = tracing::info_span!("invoke", function, invocation = %invocation, revision = %loaded.record.revision, entry = entry.name());
        let call = async {
            let agent = pre.instantiate_async(&mut store).await?;
            match &entry {
                Entry::Http(request) => agent
                    .slmfn_agent_handler()
                    .call_handle(&mut store, request)
                    .await
                    .map(|r| r.map(Exit::Http)),
                Entry::Event(event) => agent
                    .slmfn_agent_event_handler()
                    .call_on_event(&mut store, event)
                    .await
                    .map(|r| r.map(Exit::Event)),
            }
        };
        let call = tokio::time::timeout_at(deadline.into(), call).instrument(span.clone());
        let outcome = call.await;
        let _enter = span.enter();
        match outcome {
            Err(_) => Err(deadline_error()),
            Ok(Ok(Ok(exit))) => Ok(exit),
            Ok(Ok(Err(e))) => Err(HostError::Guest(match e {
                WitGuestError::BadRequest(m) => GuestError::BadRequest(m),
                WitGuestError::NotFound(m) => GuestError::NotFound(m),
                WitGuestError::Internal(m) => GuestError::Internal(m),
                WitGuestError::Overloaded(ms) => GuestError::Overloaded(ms),
            })),
            Ok(Err(e)) => {
                if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    return Err(deadline_error());
                }
                tracing::warn!(error = ?e, "guest trapped");
                Err(HostError::Trap {
                    function: function.to_string(),
                    message: trap_message(&e, &stderr),
                })
            }
        }
    }

    fn new_store(
        &self,
        loaded: &LoadedRevision,
        invocation: Arc<str>,
        stderr: GuestOutput,
        deadline: Instant,
    ) -> Result<Store<HostState>> {
        let manifest = &loaded.record.manifest;
        let function: Arc<str> = manifest.name.as_str().into();
        let invocation_id = invocation.clone();
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&loaded.env)
            .stdout(GuestOutput::new(
                function.clone(),
                invocation,
                Stream::Stdout,
            ))
            .stderr(stderr);
        let state = HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(manifest.limits.memory_mb as usize * 1024 * 1024)
                .build(),
            kv: kv::KvCtx {
                tree: loaded.kv.clone(),
            },
            inference: inference::InferenceCtx {
                service: self.inference.clone(),
                models: loaded.models.clone(),
                deadline,
                function: function.clone(),
            },
            tools: tools::ToolsCtx {
                toolbox: self.toolbox.clone(),
                grants: loaded.grants.clone(),
                function: function.clone(),
                invocation: invocation_id,
                deadline,
            },
            events: events::EventsCtx {
                sink: self.sink.clone(),
                deadline,
            },
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The deadline, checked at every epoch tick (yielding to the executor at each).
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Loads a stored revision: artifact if it fits this engine, else recompile and re-cache.
    async fn load_revision(&self, name: &str, revision: Uuid) -> Result<LoadedRevision> {
        let record = self.registry.revision(name, revision)?;
        let sha = record.component_sha256.clone();
        let bytes = self.registry.component(&sha)?.ok_or_else(|| {
            HostError::Internal(format!(
                "component {sha} of {name}/{revision} is missing from the registry"
            ))
        })?;
        let component = self.compile_cached(&sha, &bytes).await?;
        let pre = component::pre_instantiate(&self.linker, &component, record.manifest.kind)?;
        self.loaded(record, pre)
    }

    /// The component for `bytes`: from the cached artifact when usable, else compiled off the
    /// async workers and the artifact cached.
    async fn compile_cached(
        &self,
        sha: &str,
        bytes: &[u8],
    ) -> Result<wasmtime::component::Component> {
        if let Some(artifact) = self.registry.artifact(sha, &self.engine_key)? {
            let engine = self.engine.clone();
            let loaded =
                tokio::task::spawn_blocking(move || component::deserialize(&engine, &artifact))
                    .await
                    .map_err(|e| HostError::Internal(e.to_string()))?;
            if let Some(c) = loaded {
                return Ok(c);
            }
        }
        let _permit = self
            .compile_permits
            .acquire()
            .await
            .map_err(|e| HostError::Internal(e.to_string()))?;
        self.compilations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(component = sha, "compiling component");
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        let artifact = tokio::task::spawn_blocking(move || component::precompile(&engine, &owned))
            .await
            .map_err(|e| HostError::Internal(e.to_string()))??;
        let component = component::deserialize(&self.engine, &artifact).ok_or_else(|| {
            HostError::Internal("freshly precompiled artifact does not load".into())
        })?;
        self.registry
            .put_artifact(sha, &self.engine_key, &artifact)?;
        Ok(component)
    }

    fn loaded(&self, record: RevisionRecord, pre: Pre) -> Result<LoadedRevision> {
        let limits = &record.manifest.limits;
        Ok(LoadedRevision {
            kv: self.registry.kv(&record.function)?,
            slots: Arc::new(Semaphore::new(limits.max_concurrency as usize)),
            env: record
                .manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            grants: Arc::new(Grants::new(&record.manifest.tools.allowed)),
            tools: tokio::sync::OnceCell::new(),
            models: Arc::new(record.manifest.models.clone()),
            pre,
            record,
        })
    }

    fn install(&self, loaded: LoadedRevision) {
        let name = loaded.record.function.clone();
        match loaded.pre {
            Pre::Tool(_) => {
                let provider = tool_component::ComponentTools::new(&name, self.me.clone());
                if let Err(e) = self.toolbox.register(Arc::new(provider)) {
                    tracing::error!(function = %name, error = %e, "cannot offer the tool component's tools");
                }
            }
            Pre::Agent(_) => self.toolbox.unregister(&name),
        }
        self.loaded
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Arc::new(loaded));
    }
}

/// An agent's entry points.
enum Entry {
    Http(Request),
    Event(Cloudevent),
}

/// What an entry point answered.
enum Exit {
    Http(Response),
    Event(Option<Cloudevent>),
}

impl Entry {
    fn name(&self) -> &'static str {
        match self {
            Entry::Http(_) => "http",
            Entry::Event(_) => "event",
        }
    }
}

impl LoadedRevision {
    /// The same revision under the record the registry committed.
    fn with_record(mut self, record: RevisionRecord) -> Self {
        self.record = record;
        self
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

/// What a trap says, with what the guest printed to stderr before it.
fn trap_message(e: &wasmtime::Error, stderr: &GuestOutput) -> String {
    let trap = e
        .downcast_ref::<Trap>()
        .map_or_else(|| format!("{e:#}"), |t| t.to_string());
    let tail = stderr.tail();
    if tail.is_empty() {
        trap
    } else {
        format!("{trap}; guest stderr: {tail}")
    }
}

/// Aborts the guest task when the HTTP request goes away (client disconnect, server timeout).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<Result<T>> {
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(r) => r,
            Err(e) => Err(HostError::Internal(format!("guest task failed: {e}"))),
        })
    }
}
