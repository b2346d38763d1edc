//! A misbehaving guest fails only its own request: deadlines, memory, panics, stack overflow.

use std::sync::Arc;

use crate::support::{Options, Runtime, guests, testbed_manifest};

async fn start(limits: &str) -> Arc<Runtime> {
    start_with(limits, Options::default()).await
}

async fn start_with(limits: &str, options: Options) -> Arc<Runtime> {
    let dir = tempfile::tempdir().unwrap().keep();
    let rt = tokio::task::block_in_place(|| Runtime::start(&dir, options)).unwrap();
    let (s, v) = rt
        .deploy(
            "tb",
            &testbed_manifest("tb", "1", limits),
            &guests().testbed,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    Arc::new(rt)
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_guest_stops_at_its_deadline_and_others_keep_serving() {
    let rt = start("timeout_ms = 1000").await;
    let looping = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke("tb", "/loop", "").await.unwrap() })
    };
    // While it spins, other requests are served.
    for i in 0..5 {
        assert_eq!(
            rt.invoke("tb", "/echo", &format!("ping {i}"))
                .await
                .unwrap(),
            (200, format!("ping {i}"))
        );
    }
    let (status, body) = looping.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(error_of(&body).contains("deadline"), "{body}");
    assert_eq!(
        rt.invoke("tb", "/echo", "after").await.unwrap(),
        (200, "after".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_allocating_past_its_memory_limit_fails_only_its_request() {
    let rt = start("memory_mb = 32").await;
    let (status, body) = rt.invoke("tb", "/alloc", "").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(error_of(&body).contains("trapped"), "{body}");
    assert_eq!(
        rt.invoke("tb", "/echo", "ok").await.unwrap(),
        (200, "ok".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_and_stack_overflow_fail_only_their_request() {
    let rt = start("").await;
    let (status, body) = rt.invoke("tb", "/panic", "").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        error_of(&body).contains("testbed panic"),
        "the panic message should reach the client: {body}"
    );
    let (status, body) = rt.invoke("tb", "/overflow", "").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(error_of(&body).contains("trapped"), "{body}");
    assert_eq!(
        rt.invoke("tb", "/echo", "still here").await.unwrap(),
        (200, "still here".into())
    );
    // Typed guest errors map to their statuses.
    assert_eq!(rt.invoke("tb", "/error/bad", "").await.unwrap().0, 400);
    assert_eq!(rt.invoke("tb", "/error/internal", "").await.unwrap().0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_every_slot_is_busy() {
    // No call may wait: one past the slots is refused at once, which proves they are taken.
    let options = Options {
        extra_args: vec!["--max-waiting".into(), "0".into()],
        ..Options::default()
    };
    let rt = start_with("timeout_ms = 4000\nmax_concurrency = 2", options).await;
    let mut loops = Vec::new();
    for _ in 0..2 {
        let rt = rt.clone();
        loops.push(tokio::spawn(async move {
            rt.invoke("tb", "/loop", "").await.unwrap()
        }));
    }
    // Both instances hold their slots (the runtime's gauge says so), then health is asked.
    rt.wait_metric("slmfn_function_instances_busy", "function=\"tb\"", 2.0)
        .await;
    let r = rt
        .client()
        .get(format!("{}/healthz", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = rt.invoke("tb", "/echo", "third").await.unwrap();
    assert_eq!(status, 503, "a third call found a free slot: {body}");
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "the slots should still be busy"
    );
    for l in loops {
        assert_eq!(l.await.unwrap().0, 504);
    }
}
