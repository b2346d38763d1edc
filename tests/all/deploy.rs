//! Deploys: bad inputs get clear errors and change nothing; concurrent deploys; auth.

use crate::support::{Options, Runtime, guests, testbed_manifest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token".to_string();
    let opts = Options {
        token: Some(token.clone()),
        extra_args: vec!["--max-upload-bytes".into(), "1048576".into()],
        ..Options::default()
    };
    let rt = tokio::task::block_in_place(|| Runtime::start(dir.path(), opts)).unwrap();
    let g = guests();
    let good = testbed_manifest("tb", "1", "");
    let (s, v) = rt.deploy("tb", &good, &g.testbed).await.unwrap();
    assert_eq!(s, 201, "{v}");

    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "random bytes",
            good.clone(),
            b"definitely not wasm at all".to_vec(),
            400,
            "not a WebAssembly binary",
        ),
        (
            "core module",
            good.clone(),
            b"\0asm\x01\0\0\0".to_vec(),
            400,
            "core WebAssembly module",
        ),
        (
            "other world",
            good.clone(),
            g.wrong_world.clone(),
            400,
            "slmfn:agent/handler@0.2.0",
        ),
        (
            "oversized",
            good.clone(),
            vec![0u8; 2 * 1024 * 1024],
            413,
            "exceeds the limit",
        ),
        (
            "bad toml",
            "name = ".into(),
            g.testbed.clone(),
            400,
            "invalid fn.toml",
        ),
        (
            "unknown key",
            format!("{good}\n[oops]\nx = 1\n"),
            g.testbed.clone(),
            400,
            "unknown field",
        ),
        (
            "name mismatch",
            testbed_manifest("other", "1", ""),
            g.testbed.clone(),
            400,
            "names function",
        ),
        (
            "bad limit",
            testbed_manifest("tb", "1", "timeout_ms = 0"),
            g.testbed.clone(),
            400,
            "limits.timeout_ms",
        ),
    ];
    for (what, manifest, bytes, status, needle) in cases {
        let (s, v) = rt.deploy("tb", &manifest, &bytes).await.unwrap();
        assert_eq!(s, status, "{what}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{what}: error {msg:?} should mention {needle:?}"
        );
    }
    // Invalid name in the path.
    let (s, v) = rt
        .deploy(
            "Bad_Name",
            &testbed_manifest("Bad_Name", "1", ""),
            &g.testbed,
        )
        .await
        .unwrap();
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("invalid function name"),
        "{v}"
    );

    // Auth: missing and wrong tokens.
    let url = format!("{}/admin/functions", rt.url);
    let c = rt.client();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let form = reqwest::multipart::Form::new()
        .text("manifest", testbed_manifest("tb", "9", ""))
        .part(
            "component",
            reqwest::multipart::Part::bytes(g.testbed.clone()),
        );
    let r = c
        .post(format!("{url}/tb"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Nothing changed: one revision, still version 1, still serving.
    let (s, v) = rt.admin_get("/functions/tb/revisions").await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["revisions"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        rt.invoke("tb", "/version", "").await.unwrap(),
        (200, "1".into())
    );
    let (s, _) = rt.admin_get("/functions/nope").await.unwrap();
    assert_eq!(s, 404);
    assert_eq!(rt.invoke("nope", "/", "").await.unwrap().0, 404);

    // Axum's own rejections answer JSON too, naming the problem: a multipart body without a
    // boundary, a method the route lacks (with its `Allow`).
    let url = format!("{}/admin/functions/tb", rt.url);
    let no_boundary = rt
        .client()
        .post(&url)
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(no_boundary.status(), 400);
    let v: serde_json::Value = no_boundary.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("boundary"), "{v}");
    let put = rt
        .client()
        .put(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    assert!(put.headers().contains_key("allow"));
    let v: serde_json::Value = put.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_end_with_one_current_revision() {
    let dir = tempfile::tempdir().unwrap();
    let rt =
        tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
    let g = guests();
    let rt = std::sync::Arc::new(rt);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            rt.deploy(
                "tb",
                &testbed_manifest("tb", &i.to_string(), ""),
                &g.testbed,
            )
            .await
            .unwrap()
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        let (s, v) = t.await.unwrap();
        assert_eq!(s, 201, "{v}");
        revisions.push(v["revision"].as_str().unwrap().to_string());
    }
    let (_, f) = rt.admin_get("/functions/tb").await.unwrap();
    assert_eq!(f["revisions"], 20);
    let current = f["current_revision"].as_str().unwrap();
    assert!(revisions.iter().any(|r| r == current));
    let (_, revs) = rt.admin_get("/functions/tb/revisions").await.unwrap();
    let listed: Vec<&str> = revs["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap())
        .collect();
    for r in &revisions {
        assert!(listed.contains(&r.as_str()), "revision {r} not recorded");
    }
    // The serving revision is the current one.
    let version = f["manifest"]["env"]["VERSION"].as_str().unwrap();
    assert_eq!(
        rt.invoke("tb", "/version", "").await.unwrap(),
        (200, version.to_string())
    );
}

#[test]
fn second_runtime_on_the_same_data_dir_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Runtime::start(dir.path(), Options::default()).unwrap();
    let out = crate::support::fn_cli()
        .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("in use by another slmfn runtime"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let rt =
        tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
    let c = rt.client();
    assert_eq!(
        c.get(format!("{}/healthz", rt.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.get(format!("{}/readyz", rt.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ready"], true);
}
