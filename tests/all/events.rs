//! CloudEvents end to end: a real runtime, the testbed guest's `on_event`, the official Python
//! SDK and the conformance vectors, every status of Knative's data-plane contract, size limits,
//! dedupe, `emit` to a sink, cluster mode and drain.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::support::{Options, Runtime, guests, repo, testbed_manifest};

/// The testbed with triggers appended to its manifest.
fn manifest(name: &str, version: &str, limits: &str, triggers: &str) -> String {
    format!("{}{triggers}\n", testbed_manifest(name, version, limits))
}

/// Every event but those of type `unrouted`.
const ALL_BUT_UNROUTED: &str =
    "[[triggers]]\nfilters = [ { not = { exact = { type = \"unrouted\" } } } ]\n";

async fn start(dir: &std::path::Path, options: Options) -> Runtime {
    tokio::task::block_in_place(|| Runtime::start(dir, options)).unwrap()
}

async fn deploy(rt: &Runtime, name: &str, manifest: &str) {
    let (status, body) = rt.deploy(name, manifest, &guests().testbed).await.unwrap();
    assert_eq!(status, 201, "{body}");
}

/// A binary-mode event; returns status, headers and body.
async fn send(rt: &Runtime, ty: &str, id: &str, data: &str) -> (u16, HeaderMap, String) {
    let resp = rt
        .client()
        .post(format!("{}/events", rt.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tests")
        .header("ce-type", ty)
        .header("content-type", "text/plain")
        .body(data.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

async fn scrape(rt: &Runtime) -> String {
    let resp = rt.client().get(format!("{}/metrics", rt.url)).send().await;
    resp.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_sdk_and_the_conformance_vectors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let python =
        crate::support::python_venv("cloudevents-venv", &["cloudevents==2.2.0", "PyYAML==6.0.3"]);
    let out = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(repo().join("tests/clients/cloudevents_client.py"))
            .arg(&rt.url)
            .arg(repo().join("tests/data/cloudevents-conformance"))
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cloudevents_client.py failed:\n{stdout}\n{}\nruntime log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    );
    assert!(stdout.contains("all cloudevents checks passed"), "{stdout}");
    // The malformed events it sent ran nothing: the first well-formed count is 1.
    let (status, _, body) = send(&rt, "testbed.count", "after-malformed", "").await;
    assert_eq!((status, body.as_str()), (200, "1"));
}

/// Each status of the data-plane contract where it belongs (docs/api.md has the table).
#[tokio::test(flavor = "multi_thread")]
async fn every_data_plane_status_is_produced_where_it_should_be() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    deploy(
        &rt,
        "tb",
        &manifest("tb", "1", "timeout_ms = 1000", ALL_BUT_UNROUTED),
    )
    .await;
    for (ty, want, needle) in [
        ("com.example.echo", 200, "hello"),
        ("testbed.noreply", 202, ""),
        ("unrouted", 202, ""),
        ("testbed.error", 400, "bad event"),
        ("testbed.overloaded", 429, "overloaded"),
        ("testbed.internal", 500, "event handler broke"),
        ("testbed.trap", 500, "testbed event panic"),
        ("testbed.badreply", 500, "invalid reply event"),
        ("testbed.loop", 504, "deadline"),
    ] {
        let (status, headers, body) = send(&rt, ty, &format!("{ty}-1"), "hello").await;
        assert_eq!(status, want, "{ty}: {body}");
        assert!(body.contains(needle), "{ty}: {body}");
        match status {
            200 => {
                assert_eq!(headers["ce-id"], "com.example.echo-1-reply");
                assert_eq!(headers["ce-type"], "com.example.echo.reply");
                assert_eq!(headers["ce-source"], "/testbed");
                assert_eq!(headers["ce-specversion"], "1.0");
                assert_eq!(headers["content-type"], "text/plain");
            }
            202 => assert!(body.is_empty(), "202 has no body: {body}"),
            429 => assert_eq!(headers["retry-after"], "2", "1500 ms rounds up"),
            _ => {}
        }
    }
    let url = format!("{}/events", rt.url);
    let client = rt.client();
    let get = client.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let not_event = client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(not_event.status(), 400);
    let xml = client
        .post(&url)
        .header("content-type", "application/cloudevents+xml")
        .body("<event/>")
        .send()
        .await
        .unwrap();
    assert_eq!(xml.status(), 415);
    // A trapping event fails only itself.
    let (status, _, body) = send(&rt, "com.example.echo", "after-trap", "still here").await;
    assert_eq!((status, body.as_str()), (200, "still here"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_kib_event_is_accepted_and_a_larger_one_is_413_even_chunked() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        extra_args: vec!["--max-event-bytes".into(), "65536".into()],
        ..Options::default()
    };
    let rt = start(dir.path(), opts).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let data = "x".repeat(64 * 1024);
    let (status, _, body) = send(&rt, "com.example.echo", "big", &data).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), data.len());
    let (status, _, body) = send(&rt, "com.example.echo", "bigger", &format!("{data}x")).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("65536"), "{body}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..17).map(|_| Ok(vec![b'y'; 4096])).collect();
    let resp = rt
        .client()
        .post(format!("{}/", rt.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "chunked")
        .header("ce-source", "/tests")
        .header("ce-type", "com.example.echo")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_event_runs_once_and_gets_the_same_reply() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let first = send(&rt, "testbed.count", "dup-1", "").await;
    let again = send(&rt, "testbed.count", "dup-1", "").await;
    assert_eq!((first.0, first.2.as_str()), (200, "1"));
    assert_eq!(
        (again.0, again.2.as_str()),
        (200, "1"),
        "same reply, not run again"
    );
    assert_eq!(again.1["ce-id"], "dup-1-reply");
    let other = send(&rt, "testbed.count", "dup-2", "").await;
    assert_eq!(other.2, "2", "another id runs");
    // Two deliveries at once: one runs, both get its reply.
    let (a, b) = tokio::join!(
        send(&rt, "testbed.sleep", "overlap", "300"),
        send(&rt, "testbed.sleep", "overlap", "300")
    );
    assert_eq!((a.0, b.0), (200, 200), "{} / {}", a.2, b.2);
    assert_eq!(a.2, "1");
    assert_eq!(b.2, "1");
    let after = send(&rt, "testbed.sleep", "overlap-2", "1").await;
    assert_eq!(after.2, "2", "the overlapping pair ran the function once");
    // A refusal is an outcome too; a retryable failure is not kept.
    assert_eq!(send(&rt, "testbed.error", "refused", "").await.0, 400);
    assert_eq!(send(&rt, "testbed.error", "refused", "").await.0, 400);
    let log = rt.log_text();
    assert!(
        log.matches("duplicate event").count() >= 3,
        "duplicates are logged:\n{log}"
    );
    let metrics = scrape(&rt).await;
    for series in [
        r#"slmfn_event_deliveries_total{function="tb",outcome="duplicate"} 3"#,
        r#"slmfn_event_deliveries_total{function="tb",outcome="refused"} 1"#,
        r#"slmfn_events_received_total{mode="binary"} 8"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
    // Kept across a restart: SIGTERM writes the outcomes out, the next runtime replays them.
    assert!(tokio::task::block_in_place(|| rt.terminate()).unwrap());
    let rt = start(dir.path(), Options::default()).await;
    let replay = send(&rt, "testbed.count", "dup-1", "").await;
    assert_eq!(
        (replay.0, replay.2.as_str()),
        (200, "1"),
        "the first delivery's reply, after a restart, not a rerun"
    );
    assert_eq!(send(&rt, "testbed.count", "dup-3", "").await.2, "3");
}

/// Several agents get the same event; the reply comes from the first in name order whose
/// trigger keeps `reply = true`.
#[tokio::test(flavor = "multi_thread")]
async fn every_matching_agent_gets_the_event_and_one_replies() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    let quiet = "[[triggers]]\nfilter = { attributes = { source = \"/tests\" } }\nreply = false\n";
    deploy(&rt, "a", &manifest("a", "a", "", quiet)).await;
    deploy(&rt, "b", &manifest("b", "b", "", ALL_BUT_UNROUTED)).await;
    deploy(&rt, "c", &manifest("c", "c", "", ALL_BUT_UNROUTED)).await;
    deploy(
        &rt,
        "d",
        &manifest(
            "d",
            "d",
            "",
            "[[triggers]]\nfilters = [ { prefix = { type = \"nomatch.\" } } ]\n",
        ),
    )
    .await;
    let (status, headers, _) = send(&rt, "com.example.echo", "fan-1", "x").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["ce-testbedversion"], "b",
        "a does not reply; b precedes c"
    );
    send(&rt, "testbed.count", "fan-2", "").await;
    for (name, want) in [("a", "2"), ("b", "2"), ("c", "2"), ("d", "1")] {
        let (status, body) = rt
            .invoke(name, "/kv/incr?key=events.count", "")
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, want),
            "{name}'s event count + 1"
        );
    }
    let quiet_replier = "[[triggers]]\nfilter = { attributes = { source = \"/tests\" } }\n";
    deploy(&rt, "a", &manifest("a", "a", "", quiet_replier)).await;
    let (_, headers, _) = send(&rt, "com.example.echo", "fan-3", "x").await;
    assert_eq!(headers["ce-testbedversion"], "a");
}

type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A sink on loopback: answers 503 to the first delivery, 202 after; keeps what arrived.
async fn flaky_sink() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push((headers, body.to_vec()));
                        seen.len()
                    };
                    if n == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::ACCEPTED
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_reaches_the_sink_with_retries_and_the_sinkbindings_overrides() {
    let (sink, seen) = flaky_sink().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        env: vec![
            ("K_SINK".into(), sink),
            (
                "K_CE_OVERRIDES".into(),
                r#"{"extensions": {"cluster": "test"}}"#.into(),
            ),
        ],
        ..Options::default()
    };
    let rt = start(&dir.path().join("with"), opts).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let (status, _, body) = send(&rt, "testbed.emit", "e-1", "payload").await;
    assert_eq!((status, body.as_str()), (200, r#"{"emitted":true}"#));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one 503, then accepted");
    let (headers, body) = &seen[1];
    assert_eq!(headers["ce-id"], "e-1-emitted");
    assert_eq!(headers["ce-type"], "testbed.emitted");
    assert_eq!(headers["ce-source"], "/testbed");
    assert_eq!(headers["ce-cluster"], "test", "K_CE_OVERRIDES applied");
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, b"payload");

    let rt = start(&dir.path().join("without"), Options::default()).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let (_, _, body) = send(&rt, "testbed.emit", "e-2", "payload").await;
    assert!(body.contains(r#""error":"no-sink""#), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_trigger_is_refused_at_deploy_and_the_old_revision_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let bad = manifest(
        "tb",
        "2",
        "",
        "[[triggers]]\nfilters = [ { cesql = \"type = 'x'\" } ]\n",
    );
    let (status, body) = rt.deploy("tb", &bad, &guests().testbed).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("triggers[0]"), "{body}");
    let (status, headers, _) = send(&rt, "com.example.echo", "still", "x").await;
    assert_eq!(status, 200);
    assert_eq!(headers["ce-testbedversion"], "1");
}

/// In a Knative pod every request comes from the queue-proxy on 127.0.0.1: with `K_SERVICE`
/// set and no token, the admin API and `/v1` are off even for loopback clients.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_mode_turns_the_admin_api_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        env: vec![("K_SERVICE".into(), "support-desk".into())],
        ..Options::default()
    };
    let rt = start(dir.path(), opts).await;
    let (status, body) = rt
        .deploy("tb", &manifest("tb", "1", "", ""), &guests().testbed)
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("cluster mode"), "{body}");
    let models = rt
        .client()
        .get(format!("{}/v1/models", rt.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 403);
    assert!(rt.log_text().contains("cluster mode without SLMFN_TOKEN"));

    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        token: Some("secret".into()),
        env: vec![("K_SERVICE".into(), "support-desk".into())],
        ..Options::default()
    };
    let rt = start(dir.path(), opts).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", "")).await;
    assert_eq!(rt.invoke("tb", "/echo", "x").await.unwrap().0, 200);
    let metrics = scrape(&rt).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("slmfn_invocations_total{")
                && l.contains(r#"k_service="support-desk""#)),
        "K_SERVICE labels every series:\n{metrics}"
    );
}

#[test]
fn sigterm_answers_every_event_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(deploy(
        &rt,
        "tb",
        &manifest("tb", "1", "", ALL_BUT_UNROUTED),
    ));
    let url = format!("{}/events", rt.url);
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let r = reqwest::blocking::Client::new()
                    .post(url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", format!("drain-{i}"))
                    .header("ce-source", "/tests")
                    .header("ce-type", "testbed.sleep")
                    .body("1000")
                    .send()
                    .unwrap();
                (r.status().as_u16(), r.text().unwrap())
            })
        })
        .collect();
    // The signal: each event's guest has printed that it sleeps.
    let started = std::time::Instant::now();
    while rt.log_text().matches("sleeping 1000 ms").count() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "events never started:\n{}",
            rt.log_text()
        );
        std::thread::sleep(Duration::from_millis(20)); // a poll interval, not a wait for time to pass
    }
    assert!(
        rt.terminate().unwrap(),
        "the runtime exits cleanly after draining"
    );
    for t in in_flight {
        let (status, body) = t.join().unwrap();
        assert_eq!(status, 200, "{body}");
    }
}

/// Cluster mode as an image runs it: `slmfn precompile DIR` at build time, then `--functions
/// DIR` with `K_SERVICE` set serves them, compiles nothing, and refuses admin deploys.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_mode_serves_a_precompiled_functions_dir_and_compiles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    std::fs::create_dir_all(functions.join("tb")).unwrap();
    std::fs::write(
        functions.join("tb/fn.toml"),
        manifest("tb", "baked", "", ALL_BUT_UNROUTED),
    )
    .unwrap();
    std::fs::write(functions.join("tb/tb.wasm"), &guests().testbed).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slmfn"))
        .arg("precompile")
        .arg(&functions)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(functions.join("tb/tb.cwasm.key").is_file());
    let opts = Options {
        token: Some("secret".into()),
        extra_args: vec!["--functions".into(), functions.display().to_string()],
        env: vec![("K_SERVICE".into(), "tb".into())],
    };
    let rt = start(&dir.path().join("data"), opts.clone()).await;
    let log = rt.log_text();
    assert!(log.contains("serving the functions dir"), "{log}");
    assert!(
        log.contains("compiled=0"),
        "nothing compiled at start:\n{log}"
    );
    assert!(!log.contains("compiling component"), "{log}");
    let (status, headers, _) = send(&rt, "com.example.echo", "baked-1", "x").await;
    assert_eq!(status, 200);
    assert_eq!(headers["ce-testbedversion"], "baked");
    assert_eq!(
        rt.invoke("tb", "/echo", "hi").await.unwrap(),
        (200, "hi".into())
    );
    let (status, body) = rt
        .deploy("tb", &manifest("tb", "2", "", ""), &guests().testbed)
        .await
        .unwrap();
    assert_eq!(status, 403, "read-only even with the token: {body}");
    assert!(body.to_string().contains("--functions"), "{body}");
    drop(rt);

    // Without the artifact it still serves, compiling once and saying so.
    std::fs::remove_file(functions.join("tb/tb.cwasm")).unwrap();
    let rt = start(&dir.path().join("data2"), opts).await;
    let log = rt.log_text();
    assert!(log.contains("compiled=1"), "{log}");
    assert!(log.contains("no usable precompiled artifact"), "{log}");
}

/// Not ready means 503 (retried), never a 202 that would drop the event: here the functions dir
/// cannot be served, so the runtime stays unready.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_before_ready_is_503_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions");
    std::fs::create_dir_all(functions.join("tb")).unwrap();
    std::fs::write(functions.join("tb/fn.toml"), "name = \"tb\"\nbogus = 1\n").unwrap();
    let opts = Options {
        extra_args: vec!["--functions".into(), functions.display().to_string()],
        ..Options::default()
    };
    let rt =
        tokio::task::block_in_place(|| Runtime::spawn(&dir.path().join("data"), &opts)).unwrap();
    let started = std::time::Instant::now();
    while !rt.log_text().contains("the functions dir cannot be served") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            rt.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // a poll interval
    }
    let (status, headers, body) = send(&rt, "com.example.echo", "early", "x").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(body.contains("not ready"), "{body}");
}

/// The Knative runtime contract's h2c: an event and an invocation over HTTP/2 without TLS
/// (prior knowledge), as the queue-proxy may send them.
#[tokio::test(flavor = "multi_thread")]
async fn events_and_invocations_work_over_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let rt = start(dir.path(), Options::default()).await;
    deploy(&rt, "tb", &manifest("tb", "1", "", ALL_BUT_UNROUTED)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!("{}/events", rt.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "h2c-1")
        .header("ce-source", "/tests")
        .header("ce-type", "com.example.echo")
        .header("content-type", "text/plain")
        .body("over h2c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["ce-id"], "h2c-1-reply");
    assert_eq!(resp.text().await.unwrap(), "over h2c");
    let resp = h2
        .post(format!("{}/fn/tb/echo", rt.url))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
}
