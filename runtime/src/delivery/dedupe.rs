//! At-least-once in, processed once: the outcome of each (function, source, id) is kept for a
//! window bounded in time and count, and a delivery of the same event while the first is still
//! running waits for that one's outcome instead of running the function again.
//!
//! Only final outcomes are kept (a reply, no reply, a refusal, or an error after the function
//! ran); a retryable failure before the function finished (overload, deadline, trap) is not
//! kept, so the redelivery runs it again: that is what the sender's retry is for.
//!
//! # Layout
//!
//! - in memory: each kept key with its time and where its outcome is (still in memory, or in
//!   which segment), oldest first for trimming;
//! - sled tree `events.outcomes`: segment number (u64, big-endian) → the outcomes kept within
//!   [`LINGER`] of each other, as a JSON array of `{key, at_ms, outcome}`. One thread
//!   writes them behind the answers, [`LINGER`] apart, and a segment goes when the last of its
//!   outcomes is trimmed. A duplicate reads its segment back; a first delivery — the common
//!   case — touches no tree on its way in or out. One sled insert per segment instead of one
//!   per event is what keeps events near the cost of a plain `/fn` call.
//!
//! An outcome reaches sled within [`LINGER`] of its answer (on shutdown [`Seen::flush`] waits
//! for all of them), and disk when sled next flushes (every 500 ms, as for everything sled
//! holds). A crash in between forgets it, and its redelivery runs again: at-least-once still
//! holds; only "once" is lost for that event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use super::Outcome;

/// The window: how long and how many outcomes are kept.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Outcomes older than this are forgotten.
    pub age: Duration,
    /// At most this many outcomes are kept (the oldest go first).
    pub count: usize,
}

/// How long the writer gathers outcomes into one segment.
pub(crate) const LINGER: Duration = Duration::from_millis(50);

/// The dedupe store.
pub(crate) struct Seen {
    tree: sled::Tree,
    window: Window,
    kept: Arc<Mutex<Kept>>,
    running: Mutex<HashMap<Key, watch::Receiver<Option<Outcome>>>>,
    writer: Option<(mpsc::Sender<Write>, std::thread::JoinHandle<()>)>,
}

/// The kept keys: when each was kept and where its outcome is, the same oldest first (an entry
/// of `order` whose time no longer matches `at` is stale: the key was kept again later), and
/// how many live outcomes each segment holds.
#[derive(Default)]
struct Kept {
    at: HashMap<Key, Entry>,
    order: VecDeque<(u64, Key)>,
    segments: HashMap<u64, usize>,
    next_segment: u64,
    /// For the writer: outcomes kept (key, time) and segments emptied since it last wrote.
    puts: Vec<(Key, u64)>,
    removes: Vec<u64>,
}

impl Kept {
    fn idle(&self) -> bool {
        self.puts.is_empty() && self.removes.is_empty()
    }
}

struct Entry {
    at_ms: u64,
    place: Place,
}

enum Place {
    /// Not written yet: the writer takes it from here.
    Memory(Outcome),
    /// In this segment.
    Segment(u64),
}

#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    at_ms: u64,
    outcome: Outcome,
}

/// What wakes the writer thread: the first outcome kept since it last wrote (it then gathers
/// for [`LINGER`], so it wakes once per segment, not per event), or a flush.
enum Write {
    Wake,
    Flush(oneshot::Sender<()>),
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
    key: Key,
    tx: watch::Sender<Option<Outcome>>,
}

impl Seen {
    /// The store over its tree (see the module docs), trimmed to the window.
    pub(crate) fn open(tree: sled::Tree, window: Window) -> sled::Result<Self> {
        let oldest_kept = now_ms().saturating_sub(window.age.as_millis() as u64);
        let mut found = Vec::new();
        let mut next_segment = 0;
        for item in tree.iter() {
            let (key, value) = item?;
            let segment = match <[u8; 8]>::try_from(key.as_ref()) {
                Ok(b) => u64::from_be_bytes(b),
                Err(_) => {
                    tree.remove(&key)?;
                    continue;
                }
            };
            next_segment = next_segment.max(segment + 1);
            let records: Vec<Record> = serde_json::from_slice(&value).unwrap_or_default();
            found.extend(
                records
                    .into_iter()
                    .filter(|r| r.at_ms >= oldest_kept)
                    .map(|r| (r.at_ms, r.key, segment)),
            );
        }
        found.sort();
        let excess = found.len().saturating_sub(window.count);
        let mut kept = Kept {
            next_segment,
            ..Kept::default()
        };
        for (at_ms, key, segment) in found.into_iter().skip(excess) {
            let key: Key = key.into();
            let place = Place::Segment(segment);
            if let Some(Entry {
                place: Place::Segment(older),
                ..
            }) = kept.at.insert(key.clone(), Entry { at_ms, place })
            {
                *kept.segments.entry(older).or_default() -= 1;
            }
            *kept.segments.entry(segment).or_default() += 1;
            kept.order.push_back((at_ms, key));
        }
        kept.segments.retain(|_, live| *live > 0);
        for item in tree.iter().keys() {
            let key = item?;
            let segment = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte keys"));
            if !kept.segments.contains_key(&segment) {
                tree.remove(&key)?;
            }
        }
        let kept = Arc::new(Mutex::new(kept));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (tree, kept) = (tree.clone(), kept.clone());
            std::thread::Builder::new()
                .name("slmfn-dedupe".into())
                .spawn(move || write_behind(&tree, &kept, &rx))
                .map_err(sled::Error::Io)?
        };
        Ok(Self {
            tree,
            window,
            kept,
            running: Mutex::default(),
            writer: Some((tx, writer)),
        })
    }

    /// How many outcomes are kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.kept).at.len()
    }

    /// Returns once every outcome kept so far is in the tree (not yet on disk: flush the
    /// database after).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.send(Write::Flush(tx)) {
            let _ = rx.await;
        }
    }

    /// Looks the delivery up: a kept outcome, the outcome of the same delivery running now
    /// (waited for), or the right to run it.
    pub(crate) async fn begin(&self, function: &str, source: &str, id: &str) -> Begin<'_> {
        let key = key(function, source, id);
        loop {
            let waiting = {
                let mut running = lock(&self.running);
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

    fn kept(&self, key: &str) -> Option<Outcome> {
        let segment = {
            let kept = lock(&self.kept);
            let entry = kept.at.get(key)?;
            if now_ms().saturating_sub(entry.at_ms) > self.window.age.as_millis() as u64 {
                return None;
            }
            match &entry.place {
                Place::Memory(outcome) => return Some(outcome.clone()),
                Place::Segment(s) => *s,
            }
        };
        // A segment trimmed meanwhile is gone: the delivery runs again, as past the window.
        let bytes = self.tree.get(segment.to_be_bytes()).ok().flatten()?;
        let records: Vec<Record> = serde_json::from_slice(&bytes).ok()?;
        records
            .into_iter()
            .rev()
            .find(|r| r.key == key)
            .map(|r| r.outcome)
    }

    fn keep(&self, key: &Key, outcome: &Outcome) {
        let at_ms = now_ms();
        let mut kept = lock(&self.kept);
        let entry = Entry {
            at_ms,
            place: Place::Memory(outcome.clone()),
        };
        let wake = kept.idle();
        if let Some(old) = kept.at.insert(key.clone(), entry) {
            kept.forget(old);
        }
        kept.order.push_back((at_ms, key.clone()));
        // Trim: the oldest past the count, and those past the age.
        let oldest_kept = at_ms.saturating_sub(self.window.age.as_millis() as u64);
        while let Some((at, _)) = kept.order.front() {
            if kept.at.len() <= self.window.count && *at >= oldest_kept {
                break;
            }
            let (at, old) = kept.order.pop_front().expect("a front");
            if kept.at.get(&old).is_some_and(|e| e.at_ms == at) {
                let entry = kept.at.remove(&old).expect("present");
                kept.forget(entry);
            }
        }
        kept.puts.push((key.clone(), at_ms));
        drop(kept);
        if wake {
            self.send(Write::Wake);
        }
    }

    fn send(&self, write: Write) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|(tx, _)| tx.send(write).is_ok())
    }
}

impl Kept {
    /// Counts a forgotten entry out of its segment; a segment left empty is for the writer
    /// to remove.
    fn forget(&mut self, entry: Entry) {
        if let Place::Segment(s) = entry.place
            && let Some(live) = self.segments.get_mut(&s)
        {
            *live -= 1;
            if *live == 0 {
                self.segments.remove(&s);
                self.removes.push(s);
            }
        }
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        // The writer drains what was sent, then ends; joined so the tree is released.
        if let Some((tx, writer)) = self.writer.take() {
            drop(tx);
            let _ = writer.join();
        }
    }
}

/// The writer thread: gathers the outcomes kept within [`LINGER`] into one segment, until the
/// store is dropped.
fn write_behind(tree: &sled::Tree, kept: &Mutex<Kept>, rx: &mpsc::Receiver<Write>) {
    while let Ok(first) = rx.recv() {
        let mut flushed = Vec::new();
        match first {
            Write::Flush(done) => flushed.push(done),
            Write::Wake => {
                let deadline = Instant::now() + LINGER;
                while let Ok(write) =
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                {
                    if let Write::Flush(done) = write {
                        flushed.push(done);
                        break;
                    }
                }
            }
        }
        // What was kept since the last segment and is still waiting for one (not kept again
        // or trimmed since), and the segments emptied meanwhile.
        let (segment, records, removes) = {
            let mut kept = lock(kept);
            let puts = std::mem::take(&mut kept.puts);
            let removes = std::mem::take(&mut kept.removes);
            let records: Vec<Record> = puts
                .into_iter()
                .filter_map(|(key, at_ms)| match kept.at.get(&key) {
                    Some(Entry {
                        at_ms: at,
                        place: Place::Memory(outcome),
                    }) if *at == at_ms => Some(Record {
                        key: key.to_string(),
                        at_ms,
                        outcome: outcome.clone(),
                    }),
                    _ => None,
                })
                .collect();
            let segment = kept.next_segment;
            kept.next_segment += 1;
            (segment, records, removes)
        };
        let mut batch = sled::Batch::default();
        if !records.is_empty() {
            let bytes = serde_json::to_vec(&records).expect("outcomes serialize");
            batch.insert(&segment.to_be_bytes(), bytes);
        }
        for s in removes {
            batch.remove(&s.to_be_bytes());
        }
        if let Err(e) = tree.apply_batch(batch) {
            tracing::error!(error = %e, "cannot record event outcomes for dedupe");
        } else {
            // Point the entries at their segment, if still kept; a segment whose entries all
            // went meanwhile goes too.
            let mut kept = lock(kept);
            let mut live = 0;
            for r in &records {
                if let Some(entry) = kept.at.get_mut(r.key.as_str())
                    && entry.at_ms == r.at_ms
                    && matches!(entry.place, Place::Memory(_))
                {
                    entry.place = Place::Segment(segment);
                    live += 1;
                }
            }
            if live > 0 {
                kept.segments.insert(segment, live);
            } else if !records.is_empty()
                && let Err(e) = tree.remove(segment.to_be_bytes())
            {
                tracing::error!(error = %e, "cannot drop a segment of event outcomes");
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Running<'_> {
    /// Records the outcome (kept when final) and hands it to any waiting duplicate.
    pub(crate) fn finish(self, outcome: Outcome) -> Outcome {
        if outcome.is_final() {
            self.seen.keep(&self.key, &outcome);
        }
        self.tx.send_replace(Some(outcome.clone()));
        outcome
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.seen.running).remove(&self.key);
    }
}

/// A delivery's key: function, source and id, NUL-separated (shared, not copied, by the maps).
type Key = Arc<str>;

fn key(function: &str, source: &str, id: &str) -> Key {
    [function, source, id].join("\0").into()
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
        (dir, Seen::open(db.open_tree("a").unwrap(), window).unwrap())
    }

    /// The first delivery of id `n`, finished with `reply(n)`.
    async fn run_once(seen: &Seen, n: u32) {
        let Begin::Run(run) = seen.begin("f", "/s", &n.to_string()).await else {
            panic!("the first delivery of {n} runs")
        };
        run.finish(reply(n));
    }

    async fn run_all(seen: &Seen, ids: std::ops::Range<u32>) {
        for n in ids {
            run_once(seen, n).await;
        }
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
        run_all(&seen, 0..5).await;
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
    async fn outcomes_survive_a_reopen_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let window = Window {
            age: Duration::from_secs(600),
            count: 2,
        };
        {
            let seen = Seen::open(db.open_tree("a").unwrap(), window).unwrap();
            run_all(&seen, 0..3).await;
            seen.flush().await;
        }
        let seen = Seen::open(db.open_tree("a").unwrap(), window).unwrap();
        assert_eq!(seen.len(), 2);
        match seen.begin("f", "/s", "2").await {
            Begin::Done(o) => assert_eq!(o, reply(2)),
            Begin::Run(_) => panic!("a kept outcome must survive the reopen"),
        }
        assert!(matches!(seen.begin("f", "/s", "0").await, Begin::Run(_)));
    }

    #[tokio::test]
    async fn a_reopen_forgets_what_fell_out_of_a_smaller_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let wide = Window {
            age: Duration::from_secs(600),
            count: 10,
        };
        {
            let seen = Seen::open(db.open_tree("a").unwrap(), wide).unwrap();
            run_all(&seen, 0..4).await;
            seen.flush().await;
        }
        let narrow = Window { count: 1, ..wide };
        let seen = Seen::open(db.open_tree("a").unwrap(), narrow).unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            matches!(seen.begin("f", "/s", "3").await, Begin::Done(_)),
            "the newest stays"
        );
        assert!(matches!(seen.begin("f", "/s", "2").await, Begin::Run(_)));
    }

    #[tokio::test]
    async fn a_segment_goes_with_its_last_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let window = Window {
            age: Duration::from_secs(600),
            count: 1,
        };
        let tree = db.open_tree("a").unwrap();
        let seen = Seen::open(tree.clone(), window).unwrap();
        for n in 0..5 {
            run_once(&seen, n).await;
            // One segment each.
            seen.flush().await;
        }
        seen.flush().await;
        assert_eq!(
            tree.len(),
            1,
            "only the segment of the kept outcome remains"
        );
        assert!(matches!(seen.begin("f", "/s", "4").await, Begin::Done(o) if o == reply(4)));
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
