//! What the docs promise about the boundary between the runtime and a guest, each tried:
//! requests reach the guest whole, the guest sees only its manifest's environment, no files
//! and no sockets, bad guest answers and oversized inputs are clear errors.

use std::sync::Arc;

use crate::support::{Options, Runtime, guests, testbed_manifest};

async fn start(extra_args: &[&str]) -> Arc<Runtime> {
    let dir = tempfile::tempdir().unwrap().keep();
    let options = Options {
        extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        // A host variable the guest must not see.
        env: vec![("SLMFN_TEST_SECRET".into(), "host-only".into())],
        ..Options::default()
    };
    let rt = tokio::task::block_in_place(|| Runtime::start(&dir, options)).unwrap();
    let (s, v) = rt
        .deploy("tb", &testbed_manifest("tb", "v7", ""), &guests().testbed)
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    Arc::new(rt)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_path_query_headers_and_body_reach_the_guest() {
    let rt = start(&[]).await;
    let resp = rt
        .client()
        .put(format!("{}/fn/tb/request?a=1&b=two%20words", rt.url))
        .header("x-custom", "yes")
        .header("x-multi", "one")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = json(&resp.text().await.unwrap());
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/request");
    assert_eq!(seen["query"], "a=1&b=two%20words");
    assert_eq!(seen["body_len"], 5);
    let headers: Vec<(String, String)> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    for expected in [("x-custom", "yes"), ("x-multi", "one")] {
        assert!(
            headers
                .iter()
                .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
            "{expected:?} in {headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sees_only_its_manifests_environment() {
    let rt = start(&[]).await;
    assert_eq!(
        rt.invoke("tb", "/env?key=VERSION", "").await.unwrap(),
        (200, "v7".into())
    );
    for host_var in ["SLMFN_TEST_SECRET", "PATH", "HOME"] {
        let (status, body) = rt
            .invoke("tb", &format!("/env?key={host_var}"), "")
            .await
            .unwrap();
        assert_eq!(status, 404, "{host_var} leaked into the guest: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_has_no_files_and_no_sockets() {
    let rt = start(&[]).await;
    let (status, body) = rt.invoke("tb", "/sandbox", "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let probes = json(&body);
    for probe in ["read", "write", "list", "connect"] {
        assert!(
            probes[probe].is_string(),
            "{probe} succeeded inside the guest: {probes}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_guest_status_is_a_500_naming_it() {
    let rt = start(&[]).await;
    assert_eq!(
        rt.invoke("tb", "/status?code=418", "").await.unwrap().0,
        418
    );
    for code in [1000, 150, 99] {
        let (status, body) = rt
            .invoke("tb", &format!("/status?code={code}"), "")
            .await
            .unwrap();
        assert_eq!(status, 500, "{code}: {body}");
        let error = json(&body)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(&format!("invalid HTTP status {code}")),
            "{error}"
        );
    }
    assert_eq!(
        rt.invoke("tb", "/echo", "still").await.unwrap(),
        (200, "still".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_keys_and_values_past_their_limits_fail_only_that_call() {
    let rt = start(&[]).await;
    let long_key = "k".repeat(1025);
    let (status, body) = rt
        .invoke("tb", &format!("/kv/set?key={long_key}"), "v")
        .await
        .unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("too large") && body.contains("1024"),
        "{body}"
    );
    let big = "x".repeat(1024 * 1024 + 1);
    let (status, body) = rt.invoke("tb", "/kv/set?key=big", &big).await.unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("too large") && body.contains("1048576"),
        "{body}"
    );
    assert_eq!(rt.invoke("tb", "/kv/get?key=big", "").await.unwrap().0, 404);
    // At the limits, both are stored.
    let edge_key = "k".repeat(1024);
    let edge = "x".repeat(1024 * 1024);
    let set = rt
        .invoke("tb", &format!("/kv/set?key={edge_key}"), &edge)
        .await
        .unwrap();
    assert_eq!(set.0, 204, "{}", set.1);
    let (status, value) = rt
        .invoke("tb", &format!("/kv/get?key={edge_key}"), "")
        .await
        .unwrap();
    assert_eq!((status, value.len()), (200, edge.len()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_body_past_the_limit_is_a_413() {
    let rt = start(&["--max-body-bytes", "1024"]).await;
    assert_eq!(
        rt.invoke("tb", "/echo", &"a".repeat(1024)).await.unwrap().0,
        200
    );
    let (status, body) = rt.invoke("tb", "/echo", &"a".repeat(1025)).await.unwrap();
    assert_eq!(status, 413, "{body}");
    let error = json(&body)["error"].as_str().unwrap().to_string();
    assert!(error.contains("1024 bytes"), "{error}");
    assert_eq!(
        rt.invoke("tb", "/echo", "after").await.unwrap(),
        (200, "after".into())
    );
}
