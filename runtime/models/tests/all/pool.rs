//! The warm pool on tiny models: sharing, queueing, overload, keep-alive, eviction, failures.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use slmfn_models::gguf::GgufFile;
use slmfn_models::pool::PoolStats;
use slmfn_models::testing::TinyModel;
use slmfn_models::{
    CancelToken, Completion, Error, FinishReason, Job, KeepAlive, Message, ModelPool, ModelSpec,
    ModelState, PoolConfig, Prompt, SamplingParams,
};

/// A temp dir with tiny models written under the given names.
fn models(names: &[&str]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = names
        .iter()
        .map(|name| {
            let path = dir.path().join(format!("{name}.gguf"));
            TinyModel::default().write(&path).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

/// Bytes one tiny model reserves with `parallel` sessions.
fn footprint(path: &Path, parallel: u64) -> u64 {
    let meta = GgufFile::open(path).unwrap().metadata(None, false).unwrap();
    meta.weights_bytes + parallel * meta.session_bytes()
}

fn pool(specs: Vec<ModelSpec>) -> ModelPool {
    ModelPool::new(PoolConfig::default(), specs).unwrap()
}

fn greedy(n: usize) -> Option<SamplingParams> {
    Some(SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    })
}

fn text(s: &str) -> Prompt {
    Prompt::Text(s.to_string())
}

fn run(pool: &ModelPool, model: &str) -> slmfn_models::Result<Completion> {
    pool.generate(
        model,
        text("hello world"),
        greedy(4),
        CancelToken::new(),
        |_| {},
    )
}

/// A job that blocks in its first chunk until released; reports start and outcome.
struct Blocked {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
    done: mpsc::Receiver<slmfn_models::Result<Completion>>,
}

fn blocked_job() -> (Job, Blocked) {
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let (done_tx, done) = mpsc::channel();
    let mut first = true;
    let job = Job {
        prompt: text("hello world"),
        cache_scope: String::new(),
        params: greedy(8),
        cancel: CancelToken::new(),
        on_chunk: Box::new(move |_| {
            if std::mem::take(&mut first) {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
            }
        }),
        on_done: Box::new(move |r| {
            let _ = done_tx.send(r);
        }),
    };
    (
        job,
        Blocked {
            started,
            release,
            done,
        },
    )
}

/// A job that only reports its outcome.
fn plain_job(cancel: CancelToken) -> (Job, mpsc::Receiver<slmfn_models::Result<Completion>>) {
    let (tx, rx) = mpsc::channel();
    let job = Job {
        prompt: text("the world"),
        cache_scope: String::new(),
        params: greedy(4),
        cancel,
        on_chunk: Box::new(|_| {}),
        on_done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    };
    (job, rx)
}

const WAIT: Duration = Duration::from_secs(20);

/// Polls until `f` holds (the reaper and workers run on their own threads).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state(pool: &ModelPool, model: &str) -> ModelState {
    pool.status()
        .into_iter()
        .find(|s| s.name == model)
        .unwrap()
        .state
}

#[test]
fn callers_share_one_load_and_weights() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = pool(vec![ModelSpec {
        parallel: 2,
        defaults: SamplingParams::greedy(8),
        ..ModelSpec::new("tiny", &paths[0])
    }]);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| run(&pool, "tiny"))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap();
    for r in &results {
        assert_eq!(
            r.as_ref().unwrap().tokens,
            first.tokens,
            "same weights, same greedy output"
        );
    }
    let status = &pool.status()[0];
    assert_eq!(status.loads, 1, "single-flight: one load for four callers");
    assert_eq!(status.state, ModelState::Idle);
    assert!(status.memory_bytes > 0);
    assert!(status.last_load_duration.is_some());
    let stats: PoolStats = pool.stats();
    assert_eq!(stats.hits + stats.misses, 4);
    assert!(stats.misses >= 1);
    assert_eq!(stats.memory_used, status.memory_bytes);
    // A chat prompt with the model's default sampling.
    let c = pool
        .generate(
            "tiny",
            Prompt::Chat(vec![Message::user("hi")]),
            None,
            CancelToken::new(),
            |_| {},
        )
        .unwrap();
    assert!(c.usage.prompt_tokens > 10);
    assert!(
        c.usage.completion_tokens <= 8,
        "the spec's default max_tokens"
    );
    assert!(pool.loaded("tiny").unwrap().is_some());
}

#[test]
fn beyond_parallel_requests_queue_and_beyond_the_queue_are_overloaded() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = ModelPool::new(
        PoolConfig {
            retry_after: Duration::from_secs(3),
            ..PoolConfig::default()
        },
        vec![ModelSpec {
            parallel: 1,
            queue_depth: 1,
            ..ModelSpec::new("tiny", &paths[0])
        }],
    )
    .unwrap();
    let (job, running) = blocked_job();
    pool.submit("tiny", job).unwrap();
    running.started.recv_timeout(WAIT).expect("first job runs");
    let (job, queued) = plain_job(CancelToken::new());
    pool.submit("tiny", job).unwrap();
    let status = &pool.status()[0];
    assert_eq!(
        (status.state, status.busy_sessions, status.queued),
        (ModelState::Busy, 1, 1)
    );

    let (job, _) = plain_job(CancelToken::new());
    match pool.submit("tiny", job) {
        Err(Error::Overloaded { model, retry_after }) => {
            assert_eq!(
                (model.as_str(), retry_after),
                ("tiny", Duration::from_secs(3))
            );
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_eq!(pool.stats().rejected, 1);

    running.release.send(()).unwrap();
    let first = running.done.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(first.finish_reason, FinishReason::Length);
    let second = queued.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(second.usage.completion_tokens, 4);
    assert_eq!(state(&pool, "tiny"), ModelState::Idle);
    assert!(run(&pool, "tiny").is_ok(), "accepts again once drained");
}

#[test]
fn queued_jobs_can_be_cancelled_before_they_run() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = pool(vec![ModelSpec::new("tiny", &paths[0])]);
    let (job, running) = blocked_job();
    pool.submit("tiny", job).unwrap();
    running.started.recv_timeout(WAIT).unwrap();
    let cancel = CancelToken::new();
    let (job, queued) = plain_job(cancel.clone());
    pool.submit("tiny", job).unwrap();
    cancel.cancel();
    running.release.send(()).unwrap();
    let c = queued.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        (c.finish_reason, c.usage.completion_tokens),
        (FinishReason::Cancelled, 0)
    );
}

#[test]
fn keep_alive_zero_unloads_after_use_and_the_next_request_reloads() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = pool(vec![ModelSpec {
        keep_alive: KeepAlive::For(Duration::ZERO),
        ..ModelSpec::new("tiny", &paths[0])
    }]);
    run(&pool, "tiny").unwrap();
    eventually("unloaded after use", || {
        state(&pool, "tiny") == ModelState::Unloaded
    });
    let status = &pool.status()[0];
    assert_eq!(
        (status.loads, status.unloads, status.memory_bytes),
        (1, 1, 0)
    );
    assert_eq!(pool.stats().memory_used, 0);
    run(&pool, "tiny").unwrap();
    eventually("unloaded again", || pool.status()[0].unloads == 2);
    assert_eq!(pool.status()[0].loads, 2);
}

#[test]
fn keep_alive_expires_after_idle_time_and_forever_stays() {
    let (_dir, paths) = models(&["short", "forever"]);
    let pool = pool(vec![
        ModelSpec {
            keep_alive: KeepAlive::For(Duration::from_millis(300)),
            ..ModelSpec::new("short", &paths[0])
        },
        ModelSpec {
            keep_alive: KeepAlive::Forever,
            ..ModelSpec::new("forever", &paths[1])
        },
    ]);
    run(&pool, "short").unwrap();
    run(&pool, "forever").unwrap();
    eventually("short unloaded", || {
        state(&pool, "short") == ModelState::Unloaded
    });
    assert_eq!(state(&pool, "forever"), ModelState::Idle);
}

#[test]
fn eviction_frees_idle_models_lru_and_never_one_in_use() {
    let (_dir, paths) = models(&["a", "b", "c"]);
    let one = footprint(&paths[0], 1);
    let specs = ["a", "b", "c"]
        .iter()
        .zip(&paths)
        .map(|(name, path)| ModelSpec {
            keep_alive: KeepAlive::Forever,
            ..ModelSpec::new(*name, path)
        })
        .collect();
    // Room for two models, not three.
    let pool = ModelPool::new(
        PoolConfig {
            memory_budget: one * 2 + one / 2,
            ..PoolConfig::default()
        },
        specs,
    )
    .unwrap();
    run(&pool, "a").unwrap();
    run(&pool, "b").unwrap();
    // `a` is the least recently used idle model: loading `c` evicts it, not `b`.
    run(&pool, "c").unwrap();
    assert_eq!(state(&pool, "a"), ModelState::Unloaded);
    assert_eq!(state(&pool, "b"), ModelState::Idle);
    assert_eq!(state(&pool, "c"), ModelState::Idle);
    assert_eq!(pool.stats().evictions, 1);
    assert_eq!(pool.stats().memory_used, 2 * one);

    // `b` and `c` busy: `a` cannot be loaded, and neither busy model is touched.
    let (job_b, busy_b) = blocked_job();
    pool.submit("b", job_b).unwrap();
    busy_b.started.recv_timeout(WAIT).unwrap();
    let (job_c, busy_c) = blocked_job();
    pool.submit("c", job_c).unwrap();
    busy_c.started.recv_timeout(WAIT).unwrap();
    match run(&pool, "a") {
        Err(Error::OutOfMemory {
            model,
            needed,
            budget,
            ..
        }) => assert_eq!(
            (model.as_str(), needed, budget),
            ("a", one, one * 2 + one / 2)
        ),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    assert_eq!(state(&pool, "b"), ModelState::Busy);
    assert_eq!(state(&pool, "c"), ModelState::Busy);
    // `b` finishes first, so it is the least recently used.
    busy_b.release.send(()).unwrap();
    busy_b.done.recv_timeout(WAIT).unwrap().unwrap();
    assert_eq!(
        state(&pool, "b"),
        ModelState::Idle,
        "idle before the caller hears back"
    );
    busy_c.release.send(()).unwrap();
    busy_c.done.recv_timeout(WAIT).unwrap().unwrap();
    // Now `b` (idle, older than `c`) gives way.
    run(&pool, "a").unwrap();
    assert_eq!(state(&pool, "b"), ModelState::Unloaded);
    assert_eq!(state(&pool, "c"), ModelState::Idle);
}

#[test]
fn a_model_larger_than_the_budget_fails_cleanly() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = ModelPool::new(
        PoolConfig {
            memory_budget: 1000,
            ..PoolConfig::default()
        },
        vec![ModelSpec::new("tiny", &paths[0])],
    )
    .unwrap();
    assert!(matches!(run(&pool, "tiny"), Err(Error::OutOfMemory { .. })));
    assert!(matches!(pool.load("tiny"), Err(Error::OutOfMemory { .. })));
    assert_eq!(pool.stats().memory_used, 0);
}

#[test]
fn broken_model_files_give_clear_errors_and_the_pool_recovers() {
    let (dir, paths) = models(&["good"]);
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"not a gguf").unwrap();
    let missing = dir.path().join("missing.gguf");
    let pool = pool(vec![
        ModelSpec::new("good", &paths[0]),
        ModelSpec::new("broken", &broken),
        ModelSpec::new("missing", &missing),
    ]);
    match run(&pool, "broken") {
        Err(Error::LoadFailed { model, reason }) => {
            assert_eq!(model, "broken");
            assert!(reason.contains("broken.gguf"), "{reason}");
        }
        other => panic!("expected LoadFailed, got {other:?}"),
    }
    let err = run(&pool, "missing").unwrap_err();
    assert!(err.to_string().contains("missing.gguf"), "{err}");
    let status = pool.status();
    let broken_status = status.iter().find(|s| s.name == "broken").unwrap();
    assert_eq!(broken_status.state, ModelState::Unloaded);
    assert!(broken_status.last_error.is_some());
    assert_eq!(
        pool.stats().memory_used,
        0,
        "failed loads release their reservation"
    );

    // Other models are unaffected, and a repaired file loads on the next request.
    run(&pool, "good").unwrap();
    TinyModel::default().write(&broken).unwrap();
    run(&pool, "broken").unwrap();
    assert!(matches!(
        run(&pool, "nope"),
        Err(Error::ModelNotFound(name)) if name == "nope"
    ));
}

#[test]
fn preload_admin_load_and_unload() {
    let (_dir, paths) = models(&["warm", "cold"]);
    let pool = pool(vec![
        ModelSpec {
            preload: true,
            ..ModelSpec::new("warm", &paths[0])
        },
        ModelSpec::new("cold", &paths[1]),
    ]);
    pool.preload().unwrap();
    assert_eq!(state(&pool, "warm"), ModelState::Idle);
    assert_eq!(state(&pool, "cold"), ModelState::Unloaded);
    pool.load("cold").unwrap();
    assert_eq!(state(&pool, "cold"), ModelState::Idle);
    assert!(pool.unload("cold").unwrap());
    assert!(!pool.unload("cold").unwrap(), "already unloaded");
    assert_eq!(state(&pool, "cold"), ModelState::Unloaded);

    // A busy model is not unloaded.
    let (job, busy) = blocked_job();
    pool.submit("warm", job).unwrap();
    busy.started.recv_timeout(WAIT).unwrap();
    assert!(!pool.unload("warm").unwrap());
    busy.release.send(()).unwrap();
    busy.done.recv_timeout(WAIT).unwrap().unwrap();
}

#[test]
fn invalid_specs_are_rejected() {
    let (_dir, paths) = models(&["tiny"]);
    let zero = ModelSpec {
        parallel: 0,
        ..ModelSpec::new("tiny", &paths[0])
    };
    assert!(matches!(
        ModelPool::new(PoolConfig::default(), vec![zero]),
        Err(Error::InvalidInput(_))
    ));
    let twice = vec![
        ModelSpec::new("tiny", &paths[0]),
        ModelSpec::new("tiny", &paths[0]),
    ];
    assert!(matches!(
        ModelPool::new(PoolConfig::default(), twice),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn dropping_the_pool_fails_queued_jobs_and_lets_running_ones_finish() {
    let (_dir, paths) = models(&["tiny"]);
    let pool = pool(vec![ModelSpec::new("tiny", &paths[0])]);
    let (job, running) = blocked_job();
    pool.submit("tiny", job).unwrap();
    running.started.recv_timeout(WAIT).unwrap();
    let (job, queued) = plain_job(CancelToken::new());
    pool.submit("tiny", job).unwrap();
    drop(pool);
    assert!(matches!(
        queued.recv_timeout(WAIT).unwrap(),
        Err(Error::ShuttingDown(_))
    ));
    running.release.send(()).unwrap();
    assert!(running.done.recv_timeout(WAIT).unwrap().is_ok());
}
