//! The `fn` CLI as a new user drives it: deploy hello, invoke, restart, invoke again.

use crate::support::{Options, Runtime, fn_cli, repo};

fn run_fn(rt: &Runtime, args: &[&str]) -> (bool, String, String) {
    let out = fn_cli()
        .args(args)
        .env("SLMFN_URL", &rt.url)
        .output()
        .expect("running fn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hello_deploy_invoke_restart_keeps_kv() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).unwrap();
    // A relative path, as the README's user types it (cargo runs the tests in the repo root).
    assert_eq!(std::env::current_dir().unwrap(), repo());
    let (ok, out, err) = run_fn(&rt, &["deploy", "--path", "functions/hello"]);
    assert!(ok, "fn deploy failed: {out}\n{err}");
    assert!(out.contains("hello"), "{out}");

    let (ok, out, err) = run_fn(&rt, &["invoke", "hello", "--data", r#"{"name":"Ada"}"#]);
    assert!(ok, "fn invoke failed: {out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["greeting"], "Hello, Ada!");
    assert_eq!(v["count"], 1);
    let (ok, out, _) = run_fn(&rt, &["invoke", "hello", "--data", "{}"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["greeting"], "Hello, world!");
    assert_eq!(v["count"], 2);

    let (ok, out, _) = run_fn(&rt, &["list"]);
    assert!(ok && out.contains("hello"), "{out}");

    assert!(
        rt.terminate().unwrap(),
        "runtime did not exit cleanly on SIGTERM"
    );
    let rt = Runtime::start(dir.path(), Options::default()).unwrap();
    let (ok, out, err) = run_fn(&rt, &["invoke", "hello", "--data", "{}"]);
    assert!(ok, "invoke after restart failed: {out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"], 3, "kv counter must survive a restart");

    // Unknown function: a clear error and a non-zero exit.
    let (ok, _, err) = run_fn(&rt, &["invoke", "nope"]);
    assert!(!ok);
    assert!(err.contains("404") && err.contains("not found"), "{err}");

    let (ok, _, err) = run_fn(&rt, &["delete", "hello"]);
    assert!(ok, "{err}");
    let (ok, _, _) = run_fn(&rt, &["invoke", "hello"]);
    assert!(!ok, "deleted function still answers");
}

#[test]
fn new_scaffold_builds_deploys_and_answers() {
    let work = tempfile::tempdir().unwrap();
    let out = fn_cli()
        .args(["new", "my-agent"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fn new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = work.path().join("my-agent");
    assert!(dir.join("fn.toml").exists() && dir.join("src/lib.rs").exists());

    let data = tempfile::tempdir().unwrap();
    let rt = Runtime::start(data.path(), Options::default()).unwrap();
    let (ok, out, err) = run_fn(&rt, &["deploy", "--path", dir.to_str().unwrap()]);
    assert!(ok, "deploying the scaffold failed: {out}\n{err}");
    let (ok, out, err) = run_fn(&rt, &["invoke", "my-agent", "--data", "{}"]);
    assert!(ok, "{out}\n{err}");
    assert!(!out.trim().is_empty());

    // A tool component's scaffold deploys, and an agent granted it calls its tool.
    let out = fn_cli()
        .args(["new", "my-tools", "--tool"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tools_dir = work.path().join("my-tools");
    let (ok, out, err) = run_fn(&rt, &["deploy", "--path", tools_dir.to_str().unwrap()]);
    assert!(ok, "deploying the tool scaffold failed: {out}\n{err}");
    assert!(out.contains("my-tools.*"), "{out}");
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let manifest = "name = \"caller\"\n[tools]\nallowed = [\"my-tools.*\"]\n";
    let g = crate::support::guests();
    assert_eq!(
        tokio
            .block_on(rt.deploy("caller", manifest, &g.testbed))
            .unwrap()
            .0,
        201
    );
    let body = r#"{"name": "my-tools.greet", "arguments": {"name": "Ada"}}"#;
    let (status, text) = tokio
        .block_on(rt.invoke("caller", "/tools/call", body))
        .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Hello, Ada!"), "{text}");

    // `fn new` refuses bad names and existing directories.
    let out = fn_cli()
        .args(["new", "Bad_Name"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid function name"));
    let out = fn_cli()
        .args(["new", "my-agent"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn rollback_with_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let rt = Runtime::start(data.path(), Options::default()).unwrap();
    let g = crate::support::guests();
    let tokio = tokio::runtime::Runtime::new().unwrap();
    for v in ["1", "2"] {
        let (s, _) = tokio
            .block_on(rt.deploy(
                "tb",
                &crate::support::testbed_manifest("tb", v, ""),
                &g.testbed,
            ))
            .unwrap();
        assert_eq!(s, 201);
    }
    assert_eq!(
        tokio.block_on(rt.invoke("tb", "/version", "")).unwrap(),
        (200, "2".into())
    );
    let (ok, out, err) = run_fn(&rt, &["rollback", "tb"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        tokio.block_on(rt.invoke("tb", "/version", "")).unwrap(),
        (200, "1".into())
    );
    let (ok, out, _) = run_fn(&rt, &["revisions", "tb"]);
    assert!(ok);
    let (_, revs) = tokio
        .block_on(rt.admin_get("/functions/tb/revisions"))
        .unwrap();
    let second = revs["revisions"][1]["revision"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(out.contains(&second), "{out}");
    let (ok, _, err) = run_fn(&rt, &["rollback", "tb", &second]);
    assert!(ok, "{err}");
    assert_eq!(
        tokio.block_on(rt.invoke("tb", "/version", "")).unwrap(),
        (200, "2".into())
    );
}
