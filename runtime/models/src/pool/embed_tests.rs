//! The pool serving embedding models next to chat models (tiny models written by the tests).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::embed::testing::TinyBert;
use crate::embed::{EmbeddingHeader, EmbeddingModel};
use crate::testing::TinyModel;

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status(pool: &ModelPool, model: &str) -> ModelStatus {
    pool.status().into_iter().find(|s| s.name == model).unwrap()
}

/// A chat model `chat` and an embedding model `emb` (a zip) in `dir`.
fn specs(dir: &std::path::Path) -> (ModelSpec, ModelSpec) {
    let gguf = dir.join("chat.gguf");
    TinyModel::default().write(&gguf).unwrap();
    let zip = dir.join("emb.zip");
    TinyBert::default().write_zip(&zip, "").unwrap();
    (
        ModelSpec::new("chat", gguf),
        ModelSpec::embedding("emb", zip),
    )
}

fn texts(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn callers_share_one_load_of_an_embedding_model() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, mut emb) = specs(dir.path());
    emb.parallel = 2;
    let pool = ModelPool::new(PoolConfig::default(), vec![chat, emb]).unwrap();
    assert_eq!(pool.kind("emb").unwrap(), ModelKind::Embedding);
    assert_eq!(pool.kind("chat").unwrap(), ModelKind::Chat);
    let callers: Vec<_> = (0..6)
        .map(|i| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                pool.embed(
                    "emb",
                    texts(&["hello world", &"cat ".repeat(i + 1)]),
                    CancelToken::new(),
                )
            })
        })
        .collect();
    for caller in callers {
        let out = caller.join().unwrap().unwrap();
        assert_eq!(out.vectors.len(), 2);
        assert_eq!(out.vectors[0].len(), 16);
    }
    let s = status(&pool, "emb");
    assert_eq!((s.kind, s.loads, s.parallel), (ModelKind::Embedding, 1, 2));
    assert_eq!(s.state, ModelState::Idle);
    let header = EmbeddingHeader::read(&dir.path().join("emb.zip")).unwrap();
    assert_eq!(
        s.memory_bytes,
        header.weights_bytes + 2 * EmbeddingModel::activation_bytes(&header)
    );
    let a = pool.loaded_embedding("emb").unwrap().unwrap();
    let b = pool.loaded_embedding("emb").unwrap().unwrap();
    assert!(a.ptr_eq(&b), "one copy of the weights");
    assert!(pool.loaded("emb").unwrap().is_none(), "not a chat model");
    // The chat model was never touched.
    assert_eq!(status(&pool, "chat").state, ModelState::Unloaded);
    assert_eq!(status(&pool, "chat").kind, ModelKind::Chat);
}

#[test]
fn a_job_for_the_other_kind_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, emb) = specs(dir.path());
    let pool = ModelPool::new(PoolConfig::default(), vec![chat, emb]).unwrap();
    let e = pool
        .generate(
            "emb",
            Prompt::Text("hello".into()),
            None,
            CancelToken::new(),
            |_| {},
        )
        .unwrap_err();
    assert!(matches!(e, Error::WrongModelKind { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "model `emb` is an embedding model: it cannot generate text"
    );
    let e = pool
        .embed("chat", texts(&["hello"]), CancelToken::new())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "model `chat` is a chat model: it cannot embed text"
    );
    let e = pool
        .embed("nope", texts(&["hello"]), CancelToken::new())
        .unwrap_err();
    assert!(matches!(e, Error::ModelNotFound(_)), "{e:?}");
    // Refusals load nothing.
    assert_eq!(status(&pool, "emb").state, ModelState::Unloaded);
    assert_eq!(status(&pool, "chat").state, ModelState::Unloaded);
    // Bad input is the model's answer, after the load.
    let e = pool
        .embed("emb", Vec::new(), CancelToken::new())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    let e = pool
        .embed("emb", texts(&[&"cat ".repeat(40)]), CancelToken::new())
        .unwrap_err();
    assert!(e.to_string().contains("42 tokens"), "{e}");
}

#[test]
fn embedding_models_keep_alive_fit_the_budget_and_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut emb) = specs(dir.path());
    emb.keep_alive = KeepAlive::For(Duration::ZERO);
    let mut broken = ModelSpec::embedding("broken", dir.path().join("missing.zip"));
    broken.preload = false;
    let pool = ModelPool::new(PoolConfig::default(), vec![emb.clone(), broken]).unwrap();
    pool.embed("emb", texts(&["hello"]), CancelToken::new())
        .unwrap();
    eventually("keep-alive 0 unloads", || {
        status(&pool, "emb").state == ModelState::Unloaded
    });
    assert_eq!(status(&pool, "emb").unloads, 1);
    assert_eq!(pool.stats().memory_used, 0);
    let e = pool
        .embed("broken", texts(&["hello"]), CancelToken::new())
        .unwrap_err();
    assert!(matches!(e, Error::LoadFailed { .. }), "{e:?}");
    assert!(status(&pool, "broken").last_error.is_some());

    // A budget smaller than the weights.
    let small = ModelPool::new(
        PoolConfig {
            memory_budget: 1024,
            ..PoolConfig::default()
        },
        vec![emb],
    )
    .unwrap();
    let e = small
        .embed("emb", texts(&["hello"]), CancelToken::new())
        .unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e:?}");
}

#[test]
fn cancelled_embedding_jobs_do_not_run_and_queues_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut emb) = specs(dir.path());
    emb.queue_depth = 0;
    let pool = ModelPool::new(PoolConfig::default(), vec![emb]).unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let e = pool.embed("emb", texts(&["hello"]), cancel).unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e:?}");

    // parallel 1, queue 0: while the first job holds the only slot, a second is refused.
    pool.unload("emb").unwrap();
    let (tx, rx) = mpsc::channel();
    let job = |tx: mpsc::Sender<Result<Embeddings>>| EmbedJob {
        texts: texts(&["hello"]),
        cancel: CancelToken::new(),
        on_done: Box::new(move |r| {
            let _ = tx.send(r);
        }),
    };
    pool.submit_embed("emb", job(tx.clone())).unwrap();
    // The first job waits for the load, holding the slot: the second cannot queue.
    let second = pool.submit_embed("emb", job(tx));
    match second {
        Err(Error::Overloaded { .. }) => {}
        // The load and the first job finished in between (a slow test machine): no slot was
        // held any more, so the second job ran too.
        Ok(()) => {
            rx.recv().unwrap().unwrap();
        }
        Err(e) => panic!("{e:?}"),
    }
    rx.recv().unwrap().unwrap();
}
