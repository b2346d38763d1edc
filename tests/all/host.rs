//! The host in process: the cold path's precompiled artifacts.

use slmfn_runtime::host::{Host, Request};
use slmfn_runtime::registry::Registry;

use crate::support::{guests, testbed_manifest};

fn echo(body: &str) -> Request {
    Request {
        method: "POST".into(),
        path: "/echo".into(),
        query: String::new(),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_artifacts_are_recompiled_never_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let first = Host::new(
        registry.clone(),
        None,
        None,
        std::sync::Arc::new(slmfn_runtime::tools::Toolbox::empty()),
    )
    .unwrap();
    let record = first
        .deploy("tb", &testbed_manifest("tb", "1", ""), &guests().testbed)
        .await
        .unwrap();
    let sha = record.component_sha256.clone();
    let key = first.engine_key().to_string();
    assert!(
        registry.artifact(&sha, &key).unwrap().is_some(),
        "deploy stores the precompiled artifact"
    );

    // An artifact that no longer loads (an engine upgrade, a damaged cache): a new host
    // recompiles from the stored component and serves.
    registry
        .put_artifact(&sha, &key, b"not a precompiled component")
        .unwrap();
    let second = Host::new(
        registry.clone(),
        None,
        None,
        std::sync::Arc::new(slmfn_runtime::tools::Toolbox::empty()),
    )
    .unwrap();
    assert_eq!(second.load_all().await.unwrap(), 1);
    let response = second.invoke("tb", echo("after recompile")).await.unwrap();
    assert_eq!(
        (response.status, response.body),
        (200, b"after recompile".to_vec())
    );
    let artifact = registry.artifact(&sha, &key).unwrap().unwrap();
    assert_ne!(
        artifact.as_ref(),
        b"not a precompiled component",
        "the artifact is re-cached"
    );
}
