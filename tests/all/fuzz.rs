//! The deploy path with hostile multipart uploads, against a real runtime: whatever the parts,
//! their names, boundaries, headers and bytes, and wherever the body is cut, the answer is a
//! JSON error with a 4xx status (or a 201 for the rare valid upload), never a 5xx or a dropped
//! connection; and the runtime serves its function unchanged afterwards.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::{Options, Runtime, guests, testbed_manifest};

const BOUNDARY: &str = "slmfnfuzz";

/// One part: a name, optional filename, and content.
fn part() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("manifest"),
        Just("component"),
        Just("other"),
        Just(""),
        Just("manifest\"x"),
    ];
    let content = prop_oneof![
        Just(testbed_manifest("tb", "fuzz", "").into_bytes()),
        Just(b"\0asm\x0d\0\x01\0".to_vec()),
        Just(guests().testbed[..4096.min(guests().testbed.len())].to_vec()),
        prop::collection::vec(any::<u8>(), 0..256),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ];
    (name, any::<bool>(), content, any::<bool>()).prop_map(|(name, file, content, quoted)| {
        let mut out = format!("--{BOUNDARY}\r\n").into_bytes();
        let name = if quoted {
            format!("\"{name}\"")
        } else {
            name.to_string()
        };
        out.extend(format!("Content-Disposition: form-data; name={name}").bytes());
        if file {
            out.extend(b"; filename=\"c.wasm\"");
        }
        out.extend(b"\r\n\r\n");
        out.extend(content);
        out.extend(b"\r\n");
        out
    })
}

/// A whole upload: parts, a closing boundary or none, cut anywhere, under one of several
/// content types.
fn upload() -> impl Strategy<Value = (String, Vec<u8>)> {
    let content_type = prop_oneof![
        Just(format!("multipart/form-data; boundary={BOUNDARY}")),
        Just("multipart/form-data".to_string()),
        Just("multipart/form-data; boundary=other".to_string()),
        Just("application/json".to_string()),
        Just(format!("multipart/mixed; boundary={BOUNDARY}")),
    ];
    (
        content_type,
        prop::collection::vec(part(), 0..4),
        any::<bool>(),
        prop::option::of(0usize..8192),
    )
        .prop_map(|(ct, parts, close, cut)| {
            let mut body: Vec<u8> = parts.concat();
            if close {
                body.extend(format!("--{BOUNDARY}--\r\n").bytes());
            }
            if let Some(cut) = cut {
                body.truncate(cut);
            }
            (ct, body)
        })
}

#[test]
fn hostile_uploads_are_refused_with_json_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(dir.path(), Options::default()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let deploy = |ct: &str, body: Vec<u8>| {
        client
            .post(format!("{}/admin/functions/tb", rt.url))
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let form = |version: &str| {
        let manifest = testbed_manifest("tb", version, "");
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{manifest}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"c.wasm\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&guests().testbed);
        body.extend(format!("\r\n--{BOUNDARY}--\r\n").bytes());
        body
    };
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    assert_eq!(deploy(&ct, form("before")).unwrap().status(), 201);

    let mut runner = TestRunner::new(Config::with_cases(192));
    runner
        .run(&upload(), |(ct, body)| {
            let resp = deploy(&ct, body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            prop_assert!(
                status.is_client_error() || status == 201,
                "{status}: {text}"
            );
            if status.is_client_error() {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                prop_assert!(v["error"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();

    // A valid upload among the cases (possible, unlikely) set a new revision; either way the
    // function serves, and a real deploy still lands.
    let version = client
        .post(format!("{}/fn/tb/version", rt.url))
        .send()
        .unwrap();
    assert_eq!(version.status(), 200);
    assert_eq!(deploy(&ct, form("after")).unwrap().status(), 201);
    let version = client
        .post(format!("{}/fn/tb/version", rt.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(version, "after");
}

/// JSON-RPC messages of any shape at `/mcp` (the session-less path and with a made-up
/// session): never a 5xx, and a real client's `initialize` still works afterwards.
#[test]
fn hostile_mcp_messages_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        extra_args: vec!["--mcp-token".into(), "fuzz".into()],
        ..Options::default()
    };
    let rt = Runtime::start(dir.path(), options).unwrap();
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let post = |body: Vec<u8>, session: Option<&str>| {
        let mut req = client
            .post(format!("{}/mcp", rt.url))
            .bearer_auth("fuzz")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send()
    };
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,10}".prop_map(serde_json::Value::String),
        prop_oneof![
            Just("2.0"),
            Just("initialize"),
            Just("tools/list"),
            Just("tools/call"),
            Just("notifications/initialized"),
            Just("ping"),
            Just("resources/read"),
        ]
        .prop_map(|s| serde_json::Value::String(s.into())),
    ];
    let value = leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("jsonrpc"),
                    Just("id"),
                    Just("method"),
                    Just("params"),
                    Just("name"),
                    Just("arguments"),
                    Just("protocolVersion"),
                    Just("capabilities"),
                    Just("clientInfo"),
                    Just("x"),
                ]
                .prop_map(str::to_string),
                inner,
                0..5,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let message = prop_oneof![
        value.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ];
    let mut runner = TestRunner::new(Config::with_cases(192));
    runner
        .run(&(message, any::<bool>()), |(body, with_session)| {
            let session = with_session.then_some("not-a-session");
            let resp = post(body, session).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            prop_assert!(!status.is_server_error(), "{status}: {text}");
            Ok(())
        })
        .unwrap();

    // The transport's own refusal (no `Accept` naming both answer types) is JSON too.
    let resp = client
        .post(format!("{}/mcp", rt.url))
        .bearer_auth("fuzz")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let text = resp.text().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["error"].is_string(), "{text}");

    let init = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "fuzz", "version": "1"}},
    });
    let resp = post(serde_json::to_vec(&init).unwrap(), None).unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(text.contains("\"serverInfo\""), "{text}");
}
