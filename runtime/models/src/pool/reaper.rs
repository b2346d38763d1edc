//! The keep-alive reaper: one thread that unloads idle models whose keep-alive has run out.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{KeepAlive, Shared, expires_in, loader};

/// Longest sleep between sweeps when no model is due: a safety net, wake-ups do the work.
const MAX_SLEEP: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct Reaper {
    state: Mutex<ReaperState>,
    wake: Condvar,
}

#[derive(Default)]
struct ReaperState {
    stop: bool,
    /// Counts wake-ups so that one arriving during a sweep is not lost.
    wakeups: u64,
}

impl Reaper {
    /// Asks for a sweep (a model became idle or was loaded).
    pub(super) fn wake(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.wakeups += 1;
        self.wake.notify_one();
    }

    pub(super) fn stop(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        self.wake.notify_one();
    }
}

/// Starts the reaper thread. It holds the shared state until [`Reaper::stop`].
pub(super) fn start(shared: &Arc<Shared>) {
    let shared = shared.clone();
    // If the OS refuses a thread, models simply stay loaded until evicted for memory.
    let _ = std::thread::Builder::new()
        .name("slmfn-reaper".into())
        .spawn(move || run(&shared));
}

fn run(shared: &Shared) {
    loop {
        let seen = shared
            .reaper
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wakeups;
        let next = sweep(shared);
        let st = shared
            .reaper
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if st.stop {
            return;
        }
        if st.wakeups != seen {
            continue;
        }
        let timeout = next.map_or(MAX_SLEEP, |d| d.min(MAX_SLEEP));
        let (st, _) = shared
            .reaper
            .wake
            .wait_timeout(st, timeout)
            .unwrap_or_else(|e| e.into_inner());
        if st.stop {
            return;
        }
    }
}

/// Unloads every idle model past its keep-alive; returns the time until the next one is due.
fn sweep(shared: &Shared) -> Option<Duration> {
    let mut next: Option<Duration> = None;
    for entry in shared.entries.values() {
        let keep_alive = entry.spec.keep_alive;
        if keep_alive == KeepAlive::Forever {
            continue;
        }
        let now = Instant::now();
        let unloaded = loader::unload_if_idle(shared, entry, |st| {
            expires_in(st.idle_since, keep_alive, now) == Some(Duration::ZERO)
        });
        if unloaded {
            continue;
        }
        let st = entry.lock();
        if st.is_idle_loaded()
            && let Some(left) = expires_in(st.idle_since, keep_alive, now)
        {
            next = Some(next.map_or(left, |n| n.min(left)));
        }
    }
    next
}
