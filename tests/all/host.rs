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
        Default::default(),
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
        Default::default(),
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

fn host(registry: &Registry) -> std::sync::Arc<Host> {
    Host::new(
        registry.clone(),
        None,
        None,
        std::sync::Arc::new(slmfn_runtime::tools::Toolbox::empty()),
        Default::default(),
    )
    .unwrap()
}

/// A deploy that lands while the host is still loading the stored revisions is not overwritten
/// by the revision that was current before it. The stored revision's artifact is damaged, so
/// loading it recompiles (seconds); the deploy meanwhile uses a component whose artifact is
/// cached (milliseconds) and lands first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_during_startup_is_not_overwritten_by_the_stale_revision() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let first = host(&registry);
    let stale = first
        .deploy("tb", &testbed_manifest("tb", "1", ""), &guests().testbed)
        .await
        .unwrap();
    // Caches the toolkit's artifact for the deploy below.
    first
        .deploy(
            "kit",
            "name = \"kit\"\nkind = \"tool\"\n",
            &guests().toolkit,
        )
        .await
        .unwrap();
    registry
        .put_artifact(&stale.component_sha256, first.engine_key(), b"damaged")
        .unwrap();
    drop(first);

    let second = host(&registry);
    let loading = {
        let second = second.clone();
        tokio::spawn(async move { second.load_all().await })
    };
    // The recompile of the stale revision has started (the host counts it before it runs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while second.compilations() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "load_all never compiled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let fresh = second
        .deploy("tb", "name = \"tb\"\nkind = \"tool\"\n", &guests().toolkit)
        .await
        .unwrap();
    loading.await.unwrap().unwrap();
    assert_eq!(registry.function("tb").unwrap().current, fresh.revision);
    assert!(
        second.agent("tb").is_none(),
        "the stale agent revision was installed over the deploy"
    );
    let err = second.invoke("tb", echo("x")).await.unwrap_err();
    assert!(err.to_string().contains("tool component"), "{err}");
}
