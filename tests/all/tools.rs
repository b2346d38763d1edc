//! Tools end to end: a real runtime process, deployed tool components and agents, the built-in
//! providers, grants, and the npm reference MCP server (`server-everything`) over stdio and
//! streamable HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Options, Runtime, guests};

const TOOLKIT: &str = "name = \"toolkit\"\nkind = \"tool\"\n[limits]\ntimeout_ms = 2000\n";

fn agent_manifest(name: &str, allowed: &[&str]) -> String {
    let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "name = \"{name}\"\n[limits]\ntimeout_ms = 60000\n[tools]\nallowed = [{}]\n",
        allowed.join(", ")
    )
}

/// Deploys the testbed as `tb` with `manifest`.
async fn deploy_testbed(rt: &Runtime, manifest: &str) {
    let (status, body) = rt.deploy("tb", manifest, &guests().testbed).await.unwrap();
    assert_eq!(status, 201, "{body}");
}

fn runtime_with_tools(dir: &Path, tools_toml: &str, env: Vec<(String, String)>) -> Runtime {
    let file = dir.join("tools.toml");
    std::fs::write(&file, tools_toml).unwrap();
    let opts = Options {
        extra_args: vec!["--tools-file".into(), file.display().to_string()],
        env,
        ..Options::default()
    };
    tokio::task::block_in_place(|| Runtime::start(&dir.join("data"), opts)).unwrap()
}

async fn call(rt: &Runtime, agent: &str, name: &str, arguments: Value) -> Value {
    let body = json!({"name": name, "arguments": arguments}).to_string();
    let (status, text) = rt.invoke(agent, "/tools/call", &body).await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn list(rt: &Runtime, agent: &str) -> Vec<String> {
    let (status, text) = rt.invoke(agent, "/tools/list", "").await.unwrap();
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    body["ok"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn error_kind(answer: &Value) -> (&str, &str) {
    (
        answer["error"]["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {answer}")),
        answer["error"]["message"].as_str().unwrap(),
    )
}

/// Deployed tool components, the built-ins and grants, from a guest's point of view.
#[tokio::test(flavor = "multi_thread")]
async fn guests_call_granted_tools_of_components_and_built_ins() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime_with_tools(
        dir.path(),
        "forbid = [\"hidden\"]\n[http]\nallow = [\"127.0.0.1\"]\nmax_bytes = 64\n",
        Vec::new(),
    );
    let g = guests();
    let (status, body) = rt.deploy("toolkit", TOOLKIT, &g.toolkit).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let hidden = TOOLKIT.replace("toolkit", "hidden");
    assert_eq!(
        rt.deploy("hidden", &hidden, &g.toolkit).await.unwrap().0,
        201
    );
    let granted = agent_manifest("tb", &["toolkit.*", "clock.now", "http.*", "hidden.*"]);
    assert_eq!(rt.deploy("tb", &granted, &g.testbed).await.unwrap().0, 201);
    let narrow = agent_manifest("narrow", &["clock.*"]);
    assert_eq!(
        rt.deploy("narrow", &narrow, &g.testbed).await.unwrap().0,
        201
    );

    // Listing: exactly the granted tools (a forbidden namespace is invisible even if granted).
    assert_eq!(
        list(&rt, "tb").await,
        [
            "clock.now",
            "http.fetch",
            "toolkit.add",
            "toolkit.echo",
            "toolkit.fail",
            "toolkit.spin",
            "toolkit.stats",
            "toolkit.trap"
        ]
    );
    assert_eq!(list(&rt, "narrow").await, ["clock.now"]);

    // Calls into the component: text, structured, a tool-reported error.
    let echo = call(&rt, "tb", "toolkit.echo", json!({"text": "hi there"})).await;
    assert_eq!(echo["ok"]["content"][0]["text"], "hi there", "{echo}");
    assert_eq!(echo["ok"]["is_error"], false);
    let sum = call(&rt, "tb", "toolkit.add", json!({"a": 2, "b": 40})).await;
    assert_eq!(sum["ok"]["structured"]["sum"], 42, "{sum}");
    let failed = call(&rt, "tb", "toolkit.fail", json!({})).await;
    assert_eq!(failed["ok"]["is_error"], true, "{failed}");
    assert_eq!(failed["ok"]["content"][0]["text"], "it failed");

    // Arguments violating the schema, or not JSON, never reach the tool.
    let bad = call(&rt, "tb", "toolkit.add", json!({"a": "two", "b": 40})).await;
    let (kind, message) = error_kind(&bad);
    assert_eq!(kind, "invalid-arguments");
    assert!(message.contains("/a"), "{message}");
    let bad = call(&rt, "tb", "toolkit.add", json!("{not json")).await;
    assert_eq!(error_kind(&bad).0, "invalid-arguments");
    let stats = call(&rt, "tb", "toolkit.stats", json!({})).await;
    assert_eq!(stats["ok"]["structured"]["add_calls"], 1, "{stats}");

    // A trapping or looping tool fails only its own call.
    let trap = call(&rt, "tb", "toolkit.trap", json!({})).await;
    let (kind, message) = error_kind(&trap);
    assert_eq!(kind, "failed");
    assert!(
        message.contains("trapped") && message.contains("toolkit trap"),
        "{message}"
    );
    let spin = call(&rt, "tb", "toolkit.spin", json!({})).await;
    let (kind, message) = error_kind(&spin);
    assert_eq!(kind, "failed");
    assert!(message.contains("deadline"), "{message}");
    let echo = call(&rt, "tb", "toolkit.echo", json!({"text": "still here"})).await;
    assert_eq!(echo["ok"]["content"][0]["text"], "still here");

    // Built-ins: the clock; http.fetch on the allow-list (capped), off it refused.
    let now = call(&rt, "tb", "clock.now", json!({})).await;
    assert!(
        now["ok"]["structured"]["utc"]
            .as_str()
            .unwrap()
            .starts_with("20"),
        "{now}"
    );
    let url = format!("{}/healthz", rt.url);
    let fetched = call(&rt, "tb", "http.fetch", json!({"url": url})).await;
    assert_eq!(fetched["ok"]["structured"]["status"], 200, "{fetched}");
    let metrics_url = format!("{}/metrics", rt.url);
    let capped = call(&rt, "tb", "http.fetch", json!({"url": metrics_url})).await;
    assert_eq!(capped["ok"]["structured"]["truncated"], true, "{capped}");
    assert_eq!(
        capped["ok"]["structured"]["body"].as_str().unwrap().len(),
        64
    );
    let off_list = url.replace("127.0.0.1", "localhost");
    let refused = call(&rt, "tb", "http.fetch", json!({"url": off_list})).await;
    assert_eq!(refused["ok"]["is_error"], true, "{refused}");
    assert!(
        refused["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("allow-list")
    );

    // Not granted, forbidden and nonexistent tools answer the same not-found.
    let ungranted = call(&rt, "narrow", "toolkit.echo", json!({"text": "x"})).await;
    let missing = call(&rt, "narrow", "toolkit.nope", json!({})).await;
    let forbidden = call(&rt, "tb", "hidden.echo", json!({"text": "x"})).await;
    let (kind, m1) = error_kind(&ungranted);
    assert_eq!(kind, "not-found");
    let (kind, m2) = error_kind(&missing);
    assert_eq!(kind, "not-found");
    assert_eq!(
        m1.replace("toolkit.echo", "?"),
        m2.replace("toolkit.nope", "?")
    );
    let (kind, m3) = error_kind(&forbidden);
    assert_eq!(kind, "not-found");
    assert_eq!(
        m3.replace("hidden.echo", "?"),
        m2.replace("toolkit.nope", "?")
    );

    // A tool component has no HTTP entry point; a wrong kind is refused at deploy.
    let (status, text) = rt.invoke("toolkit", "/", "").await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("tool component"), "{text}");
    let (status, body) = rt
        .deploy("toolkit", "name = \"toolkit\"\n", &g.toolkit)
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.to_string().contains("kind = \\\"tool\\\""), "{body}");
    let (status, body) = rt
        .deploy("tb", &format!("kind = \"tool\"\n{granted}"), &g.testbed)
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.to_string().contains("export_tools"), "{body}");
    // ... and the refused deploys changed nothing.
    let echo = call(&rt, "tb", "toolkit.echo", json!({"text": "after"})).await;
    assert_eq!(echo["ok"]["content"][0]["text"], "after");
    // The operator's namespaces are not for components.
    let clock = TOOLKIT.replace("toolkit", "clock");
    assert_eq!(rt.deploy("clock", &clock, &g.toolkit).await.unwrap().0, 400);

    // Metered per function, tool and outcome.
    let metrics = rt
        .client()
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"slmfn_tool_calls_total{function="tb",tool="toolkit.add",outcome="ok"} 1"#,
        r#"slmfn_tool_calls_total{function="tb",tool="",outcome="invalid_arguments"} 2"#,
        r#"slmfn_tool_calls_total{function="tb",tool="toolkit.trap",outcome="failed"} 1"#,
        r#"slmfn_tool_calls_total{function="narrow",tool="",outcome="not_found"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("slmfn_tool_call_duration_seconds_bucket{"));
}

/// The installed `@modelcontextprotocol/server-everything` (scripts/test.sh installs it).
fn everything() -> PathBuf {
    let path = std::env::var("SLMFN_MCP_EVERYTHING").expect(
        "SLMFN_MCP_EVERYTHING is not set: run the tests with ./scripts/test.sh (it installs \
         @modelcontextprotocol/server-everything with npm), or point it at its dist/index.js",
    );
    PathBuf::from(path)
}

/// Waits for a line containing `needle` in the runtime's logs.
fn wait_for_log(rt: &Runtime, needle: &str) {
    for _ in 0..600 {
        if rt.log_text().contains(needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no log line with {needle:?}:\n{}", rt.log_text());
}

/// An MCP server on stdio: listed and called; killed in the middle of a call, that call is a
/// tool error and the next one restarts it.
#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_server_on_stdio_is_a_provider_that_survives_a_crash() {
    let entry = everything();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("everything.pid");
    let tools = format!(
        "[mcp.everything]\ncommand = \"sh\"\nargs = [\"-c\", \"echo $$ > {}; exec node {} stdio\"]\n",
        pidfile.display(),
        entry.display()
    );
    let env = vec![(
        "RUST_LOG".to_string(),
        "info,slmfn_runtime::tools=debug".to_string(),
    )];
    let rt = runtime_with_tools(dir.path(), &tools, env);
    let manifest = agent_manifest("tb", &["everything.*"]);
    deploy_testbed(&rt, &manifest).await;

    let names = list(&rt, "tb").await;
    assert!(names.contains(&"everything.echo".to_string()), "{names:?}");
    let sum_tool = ["everything.get-sum", "everything.add"]
        .into_iter()
        .find(|n| names.iter().any(|m| m == n))
        .unwrap_or_else(|| panic!("no sum tool in {names:?}"));
    let echo = call(
        &rt,
        "tb",
        "everything.echo",
        json!({"message": "hello mcp"}),
    )
    .await;
    assert!(
        echo["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hello mcp"),
        "{echo}"
    );
    let sum = call(&rt, "tb", sum_tool, json!({"a": 2, "b": 3})).await;
    assert!(
        sum["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains('5'),
        "{sum}"
    );
    let bad = call(&rt, "tb", "everything.echo", json!({"message": 7})).await;
    assert_eq!(error_kind(&bad).0, "invalid-arguments");

    // Kill it while a long call runs.
    let long = {
        let (url, body) = (
            format!("{}/fn/tb/tools/call", rt.url),
            json!({"name": "everything.trigger-long-running-operation", "arguments": {"duration": 30, "steps": 30}}).to_string(),
        );
        let client = rt.client();
        tokio::spawn(async move {
            client
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    tokio::task::block_in_place(|| wait_for_log(&rt, "tool=\"trigger-long-running-operation\""));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    let answer: Value = serde_json::from_str(&long.await.unwrap()).unwrap();
    let (kind, message) = error_kind(&answer);
    assert_eq!(kind, "failed", "{message}");

    // The next call starts it again.
    let echo = call(&rt, "tb", "everything.echo", json!({"message": "back"})).await;
    assert!(
        echo["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("back"),
        "{echo}"
    );
    let new_pid = std::fs::read_to_string(&pidfile).unwrap();
    assert_ne!(pid, new_pid);
}

/// The same server over streamable HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_server_over_streamable_http_is_a_provider() {
    let entry = everything();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Command::new("node")
        .arg(&entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("server-everything exited").unwrap();
        if line.contains("listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let dir = tempfile::tempdir().unwrap();
    let tools = format!("[mcp.remote]\nurl = \"http://127.0.0.1:{port}/mcp\"\n");
    let rt = runtime_with_tools(dir.path(), &tools, Vec::new());
    let manifest = agent_manifest("tb", &["remote.echo"]);
    deploy_testbed(&rt, &manifest).await;
    assert_eq!(list(&rt, "tb").await, ["remote.echo"]);
    let echo = call(&rt, "tb", "remote.echo", json!({"message": "over http"})).await;
    assert!(
        echo["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("over http"),
        "{echo}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// The official Python `mcp` client against `/mcp`: the session-based and the stateless
/// revisions list and call a deployed tool component and a deployed agent; no token is 401, a
/// foreign `Origin` 403 (tests/clients/mcp_client.py).
#[tokio::test(flavor = "multi_thread")]
async fn the_python_mcp_client_calls_tools_and_agents_at_mcp() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        extra_args: vec!["--mcp-token".into(), "mcp-secret".into()],
        ..Options::default()
    };
    let rt =
        tokio::task::block_in_place(|| Runtime::start(&dir.path().join("data"), opts)).unwrap();
    assert_eq!(
        rt.deploy("toolkit", TOOLKIT, &guests().toolkit)
            .await
            .unwrap()
            .0,
        201
    );
    rt.fn_deploy(&crate::support::repo().join("functions/hello"));
    let python = crate::support::python_venv("mcp-venv", &["mcp==2.3.0"]);
    let out = tokio::task::block_in_place(|| {
        Command::new(python)
            .arg(crate::support::repo().join("tests/clients/mcp_client.py"))
            .args(["--url", &format!("{}/mcp", rt.url), "--token", "mcp-secret"])
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mcp_client.py failed:\n{stdout}\n{}\nruntime log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        rt.log_text()
    );
    let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        summary["stateless"]["progress"].as_u64().unwrap() >= 1,
        "{summary}"
    );
}

/// A server's `notifications/tools/list_changed` drops the cached list: the next listing shows
/// the tool it added (a stdio server written with the official Python SDK).
#[tokio::test(flavor = "multi_thread")]
async fn a_changed_tool_list_is_listed_again() {
    let python = crate::support::python_venv("mcp-venv", &["mcp==2.3.0"]);
    let script = crate::support::repo().join("tests/clients/mcp_changing_server.py");
    let dir = tempfile::tempdir().unwrap();
    let tools = format!(
        "[mcp.changing]\ncommand = \"{}\"\nargs = [\"{}\"]\n",
        python.display(),
        script.display()
    );
    let rt = runtime_with_tools(dir.path(), &tools, Vec::new());
    let manifest = agent_manifest("tb", &["changing.*"]);
    deploy_testbed(&rt, &manifest).await;
    assert_eq!(list(&rt, "tb").await, ["changing.grow"]);
    let grown = call(&rt, "tb", "changing.grow", json!({})).await;
    assert_eq!(grown["ok"]["is_error"], false, "{grown}");
    // The runtime logs the notification when it drops the cached list.
    tokio::task::block_in_place(|| wait_for_log(&rt, "tool list changed"));
    let names = list(&rt, "tb").await;
    assert_eq!(names, ["changing.extra", "changing.grow"]);
    let doubled = call(&rt, "tb", "changing.extra", json!({"x": 21})).await;
    assert!(
        doubled["ok"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("42"),
        "{doubled}"
    );
}
