//! At-least-once in, processed once: the outcome of each (function, source, id) is kept in sled
//! for a window bounded in time and count, and a delivery of the same event while the first is
//! still running waits for that one's outcome instead of running the function again.
//!
//! Only final outcomes are kept (a reply, no reply, a refusal, or an error after the function
//! ran); a retryable failure before the function finished (overload, deadline, trap) is not
//! kept, so the redelivery runs it again: that is what the sender's retry is for.
//!
//! # Layout
//!
//! - tree `events.seen`: key → `{at_ms, outcome}` (JSON);
//! - tree `events.seen.order`: `at_ms` (big-endian) ++ key → `()`, oldest first, for trimming.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Outcome;

/// The window: how long and how many outcomes are kept.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Outcomes older than this are forgotten.
    pub age: Duration,
    /// At most this many outcomes are kept (the oldest go first).
    pub count: usize,
}

/// The dedupe store.
pub(crate) struct Seen {
    outcomes: sled::Tree,
    order: sled::Tree,
    window: Window,
    len: AtomicUsize,
    running: Mutex<HashMap<Vec<u8>, watch::Receiver<Option<Outcome>>>>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    at_ms: u64,
    outcome: Outcome,
}

/// What [`Seen::begin`] found.
pub(crate) enum Begin<'a> {
    /// First delivery: run the function, then [`Running::finish`].
    Run(Running<'a>),
    /// Seen before, or running now: this is its outcome.
    Done(Outcome),
}

/// A delivery being processed; dropping it unfinished lets waiters retry.
pub(crate) struct Running<'a> {
    seen: &'a Seen,
    key: Vec<u8>,
    tx: watch::Sender<Option<Outcome>>,
}

impl Seen {
    /// The store over its two trees (see the module docs), trimmed to the window.
    pub(crate) fn open(
        outcomes: sled::Tree,
        order: sled::Tree,
        window: Window,
    ) -> sled::Result<Self> {
        let len = AtomicUsize::new(outcomes.len());
        let seen = Self {
            outcomes,
            order,
            window,
            len,
            running: Mutex::default(),
        };
        seen.trim()?;
        Ok(seen)
    }

    /// How many outcomes are kept now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Looks the delivery up: a kept outcome, the outcome of the same delivery running now
    /// (waited for), or the right to run it.
    pub(crate) async fn begin(&self, function: &str, source: &str, id: &str) -> Begin<'_> {
        let key = key(function, source, id);
        loop {
            let waiting = {
                let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
                match self.kept(&key) {
                    Some(outcome) => return Begin::Done(outcome),
                    None => match running.get(&key) {
                        Some(rx) => rx.clone(),
                        None => {
                            let (tx, rx) = watch::channel(None);
                            running.insert(key.clone(), rx);
                            return Begin::Run(Running {
                                seen: self,
                                key,
                                tx,
                            });
                        }
                    },
                }
            };
            let mut rx = waiting;
            match rx.wait_for(Option::is_some).await {
                Ok(outcome) => return Begin::Done(outcome.clone().expect("waited for Some")),
                // The first delivery was abandoned (its client went away): try again.
                Err(_) => continue,
            }
        }
    }

    fn kept(&self, key: &[u8]) -> Option<Outcome> {
        let bytes = self.outcomes.get(key).ok().flatten()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        (now_ms().saturating_sub(record.at_ms) <= self.window.age.as_millis() as u64)
            .then_some(record.outcome)
    }

    fn keep(&self, key: &[u8], outcome: &Outcome) -> sled::Result<()> {
        let at_ms = now_ms();
        let record = serde_json::to_vec(&Record {
            at_ms,
            outcome: outcome.clone(),
        })
        .expect("an outcome serializes");
        let previous = self.outcomes.insert(key, record)?;
        match previous.and_then(|p| serde_json::from_slice::<Record>(&p).ok()) {
            // An expired record replaced: drop its old place in the order.
            Some(old) => {
                self.order.remove(order_key(old.at_ms, key))?;
            }
            None => {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.order.insert(order_key(at_ms, key), &[])?;
        self.trim()
    }

    /// Forgets the oldest outcomes past the count and those past the age.
    fn trim(&self) -> sled::Result<()> {
        let oldest_kept = now_ms().saturating_sub(self.window.age.as_millis() as u64);
        while let Some((order_key, _)) = self.order.first()? {
            let at_ms = u64::from_be_bytes(order_key[..8].try_into().expect("8-byte prefix"));
            if self.len() <= self.window.count && at_ms >= oldest_kept {
                break;
            }
            self.order.remove(&order_key)?;
            if self.outcomes.remove(&order_key[8..])?.is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Running<'_> {
    /// Records the outcome (kept when final) and hands it to any waiting duplicate.
    pub(crate) fn finish(self, outcome: Outcome) -> Outcome {
        if outcome.is_final()
            && let Err(e) = self.seen.keep(&self.key, &outcome)
        {
            tracing::error!(error = %e, "cannot record an event outcome for dedupe");
        }
        self.tx.send_replace(Some(outcome.clone()));
        outcome
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.seen
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

fn key(function: &str, source: &str, id: &str) -> Vec<u8> {
    [function, source, id].join("\0").into_bytes()
}

fn order_key(at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut k = at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(key);
    k
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(count: usize) -> (tempfile::TempDir, Seen) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let window = Window {
            age: Duration::from_secs(600),
            count,
        };
        let trees = (db.open_tree("a").unwrap(), db.open_tree("b").unwrap());
        (dir, Seen::open(trees.0, trees.1, window).unwrap())
    }

    fn reply(n: u32) -> Outcome {
        Outcome::Error {
            status: 400,
            message: format!("outcome {n}"),
            retry_after: None,
            fin: true,
        }
    }

    #[tokio::test]
    async fn a_final_outcome_is_given_again_and_the_count_is_bounded() {
        let (_dir, seen) = store(3);
        for n in 0..5 {
            let Begin::Run(run) = seen.begin("f", "/s", &n.to_string()).await else {
                panic!("first delivery runs")
            };
            run.finish(reply(n));
        }
        assert_eq!(seen.len(), 3);
        match seen.begin("f", "/s", "4").await {
            Begin::Done(o) => assert_eq!(o, reply(4)),
            Begin::Run(_) => panic!("a duplicate must not run"),
        }
        assert!(
            matches!(seen.begin("f", "/s", "0").await, Begin::Run(_)),
            "the oldest was trimmed"
        );
        assert!(
            matches!(seen.begin("g", "/s", "4").await, Begin::Run(_)),
            "another function's delivery is its own"
        );
    }

    #[tokio::test]
    async fn a_retryable_failure_is_not_kept() {
        let (_dir, seen) = store(10);
        let Begin::Run(run) = seen.begin("f", "/s", "1").await else {
            panic!()
        };
        run.finish(Outcome::Error {
            status: 503,
            message: "busy".into(),
            retry_after: Some(1),
            fin: false,
        });
        assert!(matches!(seen.begin("f", "/s", "1").await, Begin::Run(_)));
    }

    #[tokio::test]
    async fn an_overlapping_duplicate_waits_for_the_first() {
        let (_dir, seen) = store(10);
        let Begin::Run(run) = seen.begin("f", "/s", "1").await else {
            panic!()
        };
        let second = seen.begin("f", "/s", "1");
        let finish = async {
            tokio::task::yield_now().await;
            run.finish(reply(7));
        };
        let (second, ()) = tokio::join!(second, finish);
        assert!(matches!(second, Begin::Done(o) if o == reply(7)));
    }
}
