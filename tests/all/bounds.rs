//! A busy or hostile client cannot take the process down: the calls waiting per function are
//! bounded (and refused before their bodies are read), guest memory has one budget for the
//! whole process, slow and idle connections are cut, every body has a limit and a deadline,
//! a client that goes away is not a 413, and kv namespaces have quotas and paged listings.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Options, Runtime, guests, testbed_manifest};

/// Bound for anything a test reads from a socket: a hang fails the test instead of blocking it.
const SOCKET_GUARD: Duration = Duration::from_secs(60);

async fn start(extra_args: &[&str]) -> Arc<Runtime> {
    let dir = tempfile::tempdir().unwrap().keep();
    let options = Options {
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    };
    Arc::new(tokio::task::block_in_place(|| Runtime::start(&dir, options)).unwrap())
}

async fn deploy(rt: &Runtime, name: &str, limits: &str) {
    let (s, v) = rt
        .deploy(
            name,
            &testbed_manifest(name, "1", limits),
            &guests().testbed,
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

async fn connect(rt: &Runtime) -> TcpStream {
    TcpStream::connect(rt.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads one response head (status and headers, lowercased names) and the body its
/// `Content-Length` announces.
async fn read_response(conn: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let read = async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[head_end..].to_vec();
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(SOCKET_GUARD, read)
        .await
        .expect("no response")
}

/// Waits until the server closes the connection (a read of 0 bytes or a reset).
async fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(SOCKET_GUARD, read)
        .await
        .expect("the server kept the connection open")
}

/// Past `--max-waiting`, a call is refused at once with 503 and `Retry-After`, without its body
/// being read: the refused request announces a megabyte and sends none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_waiting_bound_are_refused_before_their_bodies_are_read() {
    let rt = start(&["--max-waiting", "1"]).await;
    deploy(&rt, "tb", "max_concurrency = 1\ntimeout_ms = 120000").await;
    let label = "function=\"tb\"";
    // One call runs (it holds the only slot), one waits.
    let running = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke("tb", "/sleep?ms=100000", "").await })
    };
    rt.wait_metric("slmfn_function_instances_busy", label, 1.0)
        .await;
    let waiting = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke("tb", "/echo", "queued").await })
    };
    rt.wait_metric("slmfn_function_calls_waiting", label, 1.0)
        .await;

    let mut conn = connect(&rt).await;
    conn.write_all(b"POST /fn/tb/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, body) = read_response(&mut conn).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        headers.iter().any(|(k, v)| k == "retry-after" && v == "1"),
        "{headers:?}"
    );
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("calls waiting"),
        "{body}"
    );
    assert!(!running.is_finished() && !waiting.is_finished());
}

/// Instances reserve their `memory_mb` from one process-wide budget: a deploy that could never
/// fit is refused, and a call that does not fit now waits, then answers 503 at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_memory_has_one_budget_for_the_process() {
    let rt = start(&["--guest-memory-mb", "100"]).await;
    let (s, v) = rt
        .deploy(
            "huge",
            &testbed_manifest("huge", "1", "memory_mb = 128"),
            &guests().testbed,
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("guest memory budget of 100 MiB"),
        "{v}"
    );

    deploy(&rt, "hog", "memory_mb = 64\ntimeout_ms = 120000").await;
    deploy(&rt, "tb", "memory_mb = 64\ntimeout_ms = 2000").await;
    let hog = {
        let rt = rt.clone();
        tokio::spawn(async move { rt.invoke("hog", "/sleep?ms=100000", "").await })
    };
    rt.wait_metric("slmfn_function_instances_busy", "function=\"hog\"", 1.0)
        .await;
    // Both instances would fit their own limits; together they pass the budget.
    let (status, body) = rt.invoke("tb", "/echo", "no room").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("guest memory budget"),
        "{body}"
    );
    assert!(!hog.is_finished());
    let text = rt.metrics_text().await;
    assert!(
        text.contains("slmfn_guest_memory_reserved_mib 64"),
        "{text}"
    );
    assert!(text.contains("slmfn_guest_memory_budget_mib 100"), "{text}");
}

/// A client that does not finish its headers, an idle keep-alive connection and a body that
/// trickles are all cut off; a client that goes away mid-body is a 400, not a 413; the admin
/// routes have body limits of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_vanishing_clients_are_cut_off() {
    let rt = start(&["--header-timeout-secs", "1", "--body-timeout-secs", "1"]).await;
    deploy(&rt, "tb", "").await;

    // Headers that never end.
    let mut conn = connect(&rt).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    read_until_closed(&mut conn).await;

    // A keep-alive connection left idle after its answer.
    let mut conn = connect(&rt).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut conn).await.0, 200);
    assert!(read_until_closed(&mut conn).await.is_empty());

    // A body that stops halfway: 408 for the function and the admin API alike.
    for path in ["/fn/tb/echo", "/admin/functions/tb/rollback"] {
        let mut conn = connect(&rt).await;
        let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(b"0123456789").await.unwrap();
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!(status, 408, "{path}: {body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("did not arrive"),
            "{body}"
        );
    }

    // A body cut short by the client closing its side.
    let mut conn = connect(&rt).await;
    conn.write_all(b"POST /fn/tb/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123")
        .await
        .unwrap();
    conn.shutdown().await.unwrap();
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("not received completely"),
        "{body}"
    );

    // The admin API's own limit, and the invocation's.
    let big = "x".repeat(65 * 1024);
    let resp = rt
        .client()
        .post(format!("{}/admin/functions/tb/rollback", rt.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("\"error\""));
}

/// The router's own refusals (a path that is not UTF-8 once decoded, a method a route lacks)
/// are JSON on every route, in OpenAI's shape on `/v1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_own_refusals_are_json_everywhere() {
    let rt = start(&[]).await;
    for (method, path, status) in [
        ("GET", "/fn/%FF", 400),
        ("GET", "/fn/%FF/x", 400),
        ("GET", "/admin/functions/%FF", 400),
        ("PATCH", "/admin/functions", 405),
        ("DELETE", "/metrics", 405),
        ("POST", "/healthz", 405),
        ("PUT", "/events", 405),
        ("GET", "/nowhere", 404),
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/v1/models/%FF", 400),
    ] {
        let resp = rt
            .client()
            .request(method.parse().unwrap(), format!("{}{path}", rt.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        let body = resp.text().await.unwrap();
        let error = &json(&body)["error"];
        if path.starts_with("/v1") {
            assert!(error["message"].is_string(), "{method} {path}: {body}");
        } else {
            assert!(error.is_string(), "{method} {path}: {body}");
        }
    }
}

/// The manifest's kv quota holds through the guest API, and `list-keys-page` pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_quotas_and_pages_reach_the_guest() {
    let rt = start(&[]).await;
    deploy(&rt, "tb", "kv_max_keys = 3\nkv_max_bytes = 1000").await;
    for k in ["u1", "u2", "u3"] {
        assert_eq!(
            rt.invoke("tb", &format!("/kv/set?key={k}"), "v")
                .await
                .unwrap()
                .0,
            204
        );
    }
    let (status, body) = rt.invoke("tb", "/kv/set?key=u4", "v").await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("kv quota of 3 keys"), "{body}");
    assert_eq!(rt.invoke("tb", "/kv/get?key=u4", "").await.unwrap().0, 404);
    let (status, body) = rt
        .invoke("tb", "/kv/set?key=u1", &"x".repeat(2000))
        .await
        .unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("too large"), "{body}");
    assert_eq!(
        rt.invoke("tb", "/kv/delete?key=u3", "").await.unwrap().0,
        204
    );
    assert_eq!(rt.invoke("tb", "/kv/set?key=u4", "v").await.unwrap().0, 204);

    let (status, body) = rt
        .invoke("tb", "/kv/page?prefix=u&limit=2", "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"keys": ["u1", "u2"], "next": "u2"})
    );
    let (_, body) = rt
        .invoke("tb", "/kv/page?prefix=u&limit=2&after=u2", "")
        .await
        .unwrap();
    assert_eq!(
        json(&body),
        serde_json::json!({"keys": ["u4"], "next": null})
    );
    let (_, body) = rt.invoke("tb", "/kv/list?prefix=u", "").await.unwrap();
    assert_eq!(json(&body), serde_json::json!(["u1", "u2", "u4"]));

    // A manifest quota out of range is a deploy error naming it.
    let (s, v) = rt
        .deploy(
            "tb",
            &testbed_manifest("tb", "2", "kv_max_keys = 0"),
            &guests().testbed,
        )
        .await
        .unwrap();
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("kv_max_keys"), "{v}");
}

/// A registry record that does not decode does not keep the runtime from starting: it is
/// quarantined, the other functions serve, and `/admin/quarantine` and the metric show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_registry_record_is_quarantined_and_the_runtime_starts() {
    let dir = tempfile::tempdir().unwrap().keep();
    {
        let rt = tokio::task::block_in_place(|| Runtime::start(&dir, Options::default())).unwrap();
        deploy(&rt, "good", "").await;
        deploy(&rt, "bad", "").await;
        assert!(tokio::task::block_in_place(|| rt.terminate()).unwrap());
    }
    {
        let db = sled::open(dir.join("registry")).unwrap();
        db.open_tree("functions")
            .unwrap()
            .insert("bad", b"\xff not a record".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let rt = tokio::task::block_in_place(|| Runtime::start(&dir, Options::default())).unwrap();
    assert_eq!(
        rt.invoke("good", "/echo", "still").await.unwrap(),
        (200, "still".into())
    );
    assert_eq!(rt.invoke("bad", "/echo", "").await.unwrap().0, 404);
    let (status, v) = rt.admin_get("/quarantine").await.unwrap();
    assert_eq!(status, 200, "{v}");
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{v}");
    assert_eq!(
        (records[0]["tree"].as_str(), records[0]["key"].as_str()),
        (Some("functions"), Some("bad"))
    );
    let text = rt.metrics_text().await;
    assert!(
        text.contains("slmfn_registry_quarantined_records 1"),
        "{text}"
    );
    assert!(rt.log_text().contains("quarantined"), "the log names it");
}

/// While a restarted runtime is still loading its functions, a call of one of them is a 503
/// with `Retry-After` (it may be one still loading), never a 404 that a client or Knative's
/// queue-proxy would not retry. The precompiled artifacts are dropped first, so loading
/// recompiles and takes long enough to be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_during_startup_are_told_to_retry_not_that_the_function_is_missing() {
    let dir = tempfile::tempdir().unwrap().keep();
    {
        let rt = tokio::task::block_in_place(|| Runtime::start(&dir, Options::default())).unwrap();
        deploy(&rt, "tb", "").await;
        assert!(tokio::task::block_in_place(|| rt.terminate()).unwrap());
    }
    {
        let db = sled::open(dir.join("registry")).unwrap();
        db.open_tree("artifacts").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let rt = tokio::task::block_in_place(|| Runtime::spawn(&dir, &Options::default())).unwrap();
    let client = rt.client();
    let mut retried = 0;
    for attempt in 0.. {
        assert!(attempt < 100_000, "tb never answered");
        let resp = client
            .post(format!("{}/fn/tb/echo", rt.url))
            .body("up")
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => break,
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                retried += 1;
            }
            other => panic!("{other} while starting: {}", resp.text().await.unwrap()),
        }
    }
    assert!(retried > 0, "the call never met the loading runtime");
}
