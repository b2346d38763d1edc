//! Concurrency: many invocations in flight, redeploys under traffic, drain on SIGTERM.

use std::sync::Arc;

use futures::StreamExt;

use crate::support::{Options, Runtime, guests, testbed_manifest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_in_flight_survive_redeploys() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap(),
    );
    let g = guests();
    assert_eq!(
        rt.deploy("tb", &testbed_manifest("tb", "0", ""), &g.testbed)
            .await
            .unwrap()
            .0,
        201
    );
    // Redeploys are paced by the traffic itself: version v goes out once 40 × v calls have
    // been answered, so each lands while calls are in flight (16 at a time, 200 in all).
    let (answered, mut progress) = tokio::sync::watch::channel(0usize);
    let redeploys = {
        let rt = rt.clone();
        tokio::spawn(async move {
            for v in 1..=3 {
                progress.wait_for(|n| *n >= 40 * v).await.unwrap();
                let (s, body) = rt
                    .deploy(
                        "tb",
                        &testbed_manifest("tb", &v.to_string(), ""),
                        &g.testbed,
                    )
                    .await
                    .unwrap();
                assert_eq!(s, 201, "{body}");
            }
        })
    };
    let results: Vec<(usize, u16, String)> = futures::stream::iter(0..200)
        .map(|i| {
            let (rt, answered) = (rt.clone(), &answered);
            async move {
                let (s, body) = rt
                    .invoke("tb", "/echo", &format!("request {i}"))
                    .await
                    .unwrap();
                answered.send_modify(|n| *n += 1);
                (i, s, body)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    redeploys.await.unwrap();
    assert_eq!(results.len(), 200);
    for (i, s, body) in results {
        assert_eq!((s, body.as_str()), (200, format!("request {i}").as_str()));
    }
    assert_eq!(
        rt.invoke("tb", "/version", "").await.unwrap(),
        (200, "3".into())
    );
}

/// A redeploy really overlaps calls in flight: four calls of revision 1 wait on a barrier (a kv
/// key), the runtime's gauge shows them holding their slots, version 2 is deployed while they
/// wait (they cannot have finished: nothing has released them), new calls reach version 2, and
/// once released the four finish on version 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_overlaps_calls_in_flight_and_they_finish_on_their_revision() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(
        tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap(),
    );
    let g = guests();
    let manifest = |v: &str| testbed_manifest("tb", v, "timeout_ms = 60000");
    assert_eq!(
        rt.deploy("tb", &manifest("1"), &g.testbed).await.unwrap().0,
        201
    );
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let rt = rt.clone();
            tokio::spawn(async move { rt.invoke("tb", "/wait?key=go", "").await.unwrap() })
        })
        .collect();
    rt.wait_metric("slmfn_function_instances_busy", "function=\"tb\"", 4.0)
        .await;
    let (s, body) = rt.deploy("tb", &manifest("2"), &g.testbed).await.unwrap();
    assert_eq!(s, 201, "{body}");
    assert!(waiting.iter().all(|w| !w.is_finished()), "released early");
    assert_eq!(
        rt.invoke("tb", "/version", "").await.unwrap(),
        (200, "2".into())
    );
    // The new revision's kv is the function's: setting the key releases the old calls.
    assert_eq!(rt.invoke("tb", "/kv/set?key=go", "1").await.unwrap().0, 204);
    for w in waiting {
        let (s, body) = w.await.unwrap();
        assert_eq!((s, body.as_str()), (200, r#"{"version":"1"}"#));
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(
        tokio
            .block_on(rt.deploy("tb", &testbed_manifest("tb", "1", ""), &guests().testbed))
            .unwrap()
            .0,
        201
    );
    let url = format!("{}/fn/tb/sleep?ms=1500", rt.url);
    let in_flight = std::thread::spawn(move || {
        let r = reqwest::blocking::Client::new().post(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    // The request holds its instance slot before SIGTERM goes out.
    tokio.block_on(rt.wait_metric("slmfn_function_instances_busy", "function=\"tb\"", 1.0));
    assert!(
        rt.terminate().unwrap(),
        "runtime should exit cleanly after draining"
    );
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1500"), "{body}");
}
