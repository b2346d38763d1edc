//! Invocations: an agent's `handle` or `on-event` on a fresh instance of its current
//! revision, with the manifest's limits, a deadline and the capabilities it is granted.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::FutureExt;
use tracing::Instrument;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::component::Pre;
use super::output::{GuestOutput, Stream};
use super::state::HostState;
use super::{
    Admitted, Cloudevent, GuestError, Host, HostError, LoadedRevision, Request, Response, Result,
};
use super::{events, inference, kv, tools};
use crate::wit::slmfn::agent::types::Error as WitGuestError;
use uuid::Uuid;

impl Host {
    /// Calls the function's `handle` on a fresh instance: its first slice on the caller's task,
    /// the rest (if any) on the guest runtime (see the module docs). Admission first
    /// ([`Host::admit`]).
    pub async fn invoke(self: &Arc<Self>, name: &str, request: Request) -> Result<Response> {
        let admitted = self.admit(name).await?;
        self.invoke_admitted(admitted, request).await
    }

    /// [`Host::invoke`] for a call admitted already (the server admits before it reads the
    /// body). It runs on the revision it was admitted to, even if another is current now.
    pub async fn invoke_admitted(
        self: &Arc<Self>,
        admitted: Admitted,
        request: Request,
    ) -> Result<Response> {
        match self.enter(admitted, Entry::Http(request)).await? {
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
        let admitted = self.admit(name).await?;
        match self.enter(admitted, Entry::Event(event)).await? {
            Exit::Event(reply) => Ok(reply),
            Exit::Http(_) => unreachable!("an event entry answers with an event"),
        }
    }

    async fn enter(self: &Arc<Self>, admitted: Admitted, entry: Entry) -> Result<Exit> {
        let host = self.clone();
        // A host bug that panics fails this request only, on either runtime.
        let mut call = Box::pin(
            AssertUnwindSafe(async move { host.run(admitted, entry).await })
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

    /// Runs an admitted call; its slot and memory are released when it ends.
    async fn run(&self, admitted: Admitted, entry: Entry) -> Result<Exit> {
        let loaded = admitted.loaded.clone();
        let deadline = admitted.deadline;
        let manifest = &loaded.record.manifest;
        let function = manifest.name.as_str();
        let deadline_error = || HostError::DeadlineExceeded {
            function: function.to_string(),
            timeout_ms: manifest.limits.timeout_ms,
        };
        let Pre::Agent(pre) = &loaded.pre else {
            return Err(HostError::NotAnAgent(function.to_string()));
        };
        let _admitted = admitted;
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

    pub(super) fn new_store(
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
                namespace: loaded.kv.clone(),
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

/// What a trap says, with what the guest printed to stderr before it.
pub(super) fn trap_message(e: &wasmtime::Error, stderr: &GuestOutput) -> String {
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
