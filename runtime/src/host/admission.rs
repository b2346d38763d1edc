//! Admission: before an instance runs, its call holds one of the function's instance slots
//! (`max_concurrency`) and its `memory_mb` of the process-wide guest memory budget, so the
//! sum of guest linear memory can never pass the budget whatever the manifests say
//! (`memory_mb` × `max_concurrency` × functions would). An agent call waits for both within
//! its deadline, and at most [`HostLimits::max_waiting`] calls wait per function: past that a
//! call is refused at once ([`HostError::QueueFull`], 503 with `Retry-After`) without its body
//! being read. A tool component's instance, started inside an agent's call, does not wait for
//! memory (the agent holds its own share; waiting could starve both): it gets memory at once
//! or the tool call fails as unavailable.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::{Host, HostError, LoadedRevision, Result};

/// Process-wide bounds of the host.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// Calls that may wait per function beyond those running.
    pub max_waiting: usize,
    /// The guest memory budget in MiB; `None`: half of what this process may use.
    pub guest_memory_mb: Option<u64>,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            max_waiting: 64,
            guest_memory_mb: None,
        }
    }
}

/// The guest memory budget: one permit per MiB.
pub(super) struct MemoryBudget {
    permits: Arc<Semaphore>,
    total_mb: u32,
}

impl MemoryBudget {
    pub(super) fn new(limits: &HostLimits) -> Self {
        let total = limits.guest_memory_mb.unwrap_or_else(default_budget_mb);
        let total_mb = u32::try_from(total).unwrap_or(u32::MAX).max(1);
        tracing::info!(budget_mb = total_mb, "guest memory budget");
        Self {
            permits: Arc::new(Semaphore::new(total_mb as usize)),
            total_mb,
        }
    }

    /// The whole budget, in MiB.
    pub(super) fn total_mb(&self) -> u32 {
        self.total_mb
    }

    /// MiB reserved by running instances now.
    pub(super) fn reserved_mb(&self) -> u32 {
        self.total_mb
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }
}

/// Half the memory this process may use: its cgroup's limit when it has one (a Kubernetes
/// pod), else the machine's RAM; 1 GiB when neither can be read.
fn default_budget_mb() -> u64 {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let ram = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let bytes = match (cgroup, ram) {
        (Some(c), Some(r)) => c.min(r),
        (Some(b), None) | (None, Some(b)) => b,
        (None, None) => 2 << 30,
    };
    (bytes / 2 / (1024 * 1024)).max(1)
}

/// The calls waiting for one revision's slots and memory.
#[derive(Default)]
pub(super) struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    /// Joins the waiters unless `max` already wait.
    fn enter(&self, max: usize) -> Option<WaitTicket> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitTicket(self.0.clone()))
    }

    /// How many wait now.
    pub(super) fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One waiter; leaves on drop.
struct WaitTicket(Arc<AtomicUsize>);

impl Drop for WaitTicket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted call: what it may run on and until when.
pub struct Admitted {
    pub(super) loaded: Arc<LoadedRevision>,
    pub(super) deadline: Instant,
    _slot: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Host {
    /// Admits a call of `name`'s current revision: waits (its deadline counting from now) for
    /// an instance slot and its memory. Refused at once when the function has
    /// `max_waiting` calls waiting already or needs more memory than the whole budget.
    pub async fn admit(&self, name: &str) -> Result<Admitted> {
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::FunctionNotFound(name.to_string()))?;
        let limits = &loaded.record.manifest.limits;
        let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
        let function = || name.to_string();
        let memory_mb = limits.memory_mb;
        self.check_memory(name, memory_mb)?;
        let mut ticket = None;
        let mut wait =
            |loaded: &LoadedRevision| -> Result<()> {
                if ticket.is_none() {
                    ticket = Some(loaded.waiting.enter(self.limits.max_waiting).ok_or_else(
                        || HostError::QueueFull {
                            function: function(),
                            waiting: self.limits.max_waiting,
                        },
                    )?);
                }
                Ok(())
            };
        let slot = match loaded.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {
                wait(&loaded)?;
                tokio::time::timeout_at(deadline.into(), loaded.slots.clone().acquire_owned())
                    .await
                    .map_err(|_| HostError::Busy {
                        function: function(),
                        limit: limits.max_concurrency,
                    })?
                    .map_err(|_| closed())?
            }
        };
        let memory = match self
            .memory
            .permits
            .clone()
            .try_acquire_many_owned(memory_mb)
        {
            Ok(memory) => memory,
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {
                wait(&loaded)?;
                let acquire = self.memory.permits.clone().acquire_many_owned(memory_mb);
                tokio::time::timeout_at(deadline.into(), acquire)
                    .await
                    .map_err(|_| HostError::MemoryBusy {
                        function: function(),
                        memory_mb,
                        budget_mb: self.memory.total_mb(),
                    })?
                    .map_err(|_| closed())?
            }
        };
        Ok(Admitted {
            loaded,
            deadline,
            _slot: slot,
            _memory: memory,
        })
    }

    /// The memory of a tool component's instance, at once or not at all (see the module
    /// docs).
    pub(super) fn tool_memory(&self, loaded: &LoadedRevision) -> Option<OwnedSemaphorePermit> {
        self.memory
            .permits
            .clone()
            .try_acquire_many_owned(loaded.record.manifest.limits.memory_mb)
            .ok()
    }

    /// Refuses a function whose instances could never be admitted (at deploy, and at a call
    /// after the budget was lowered below it).
    pub(super) fn check_memory(&self, function: &str, memory_mb: u32) -> Result<()> {
        let budget_mb = self.memory.total_mb();
        if memory_mb > budget_mb {
            return Err(HostError::OverMemoryBudget {
                function: function.to_string(),
                memory_mb,
                budget_mb,
            });
        }
        Ok(())
    }

    /// The guest memory budget and what running instances reserve of it now, in MiB.
    pub fn guest_memory(&self) -> (u32, u32) {
        (self.memory.reserved_mb(), self.memory.total_mb())
    }
}

fn closed() -> HostError {
    HostError::Internal("instance slots closed".into())
}
