//! Crash safety: kill -9 at any point of a deploy leaves the previous revision serving and the
//! store readable; a deploy that got its 2xx survives an immediate kill -9.

use std::time::Duration;

use futures::StreamExt;

use crate::support::{Options, Runtime, guests, testbed_manifest};

async fn current_version(rt: &Runtime) -> String {
    let (s, body) = rt.invoke("tb", "/version", "").await.unwrap();
    assert_eq!(s, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_deploys_leaves_previous_revision_and_readable_store() {
    let dir = tempfile::tempdir().unwrap();
    let g = guests();
    let mut rt =
        tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
    assert_eq!(
        rt.deploy("tb", &testbed_manifest("tb", "base", ""), &g.testbed)
            .await
            .unwrap()
            .0,
        201
    );
    let mut acknowledged = vec!["base".to_string()];
    // Kill at spread-out moments: mid-upload, during compile, during commit, after the answer.
    for round in 0..8u64 {
        let version = format!("v{round}");
        let manifest = testbed_manifest("tb", &version, "");
        let deploy = {
            let url = rt.url.clone();
            let bytes = g.testbed.clone();
            tokio::spawn(async move {
                // Stream the upload slowly so early kills land mid-upload.
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
                let body =
                    reqwest::Body::wrap_stream(futures::stream::iter(chunks).then(|c| async {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        c
                    }));
                let form = reqwest::multipart::Form::new()
                    .text("manifest", manifest)
                    .part("component", reqwest::multipart::Part::stream(body));
                let r = reqwest::Client::new()
                    .post(format!("{url}/admin/functions/tb"))
                    .multipart(form)
                    .send()
                    .await;
                r.map(|r| r.status().as_u16()).ok()
            })
        };
        tokio::time::sleep(Duration::from_millis(round * 40)).await;
        tokio::task::block_in_place(|| rt.kill9_in_place());
        let status = deploy.await.unwrap();
        if status == Some(201) {
            acknowledged.push(version.clone());
        }
        rt =
            tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
        let (s, list) = rt.admin_get("/functions").await.unwrap();
        assert_eq!(s, 200, "store must stay readable: {list}");
        let serving = current_version(&rt).await;
        // Serving: the last acknowledged deploy, or the one interrupted after its commit point.
        assert!(
            serving == *acknowledged.last().unwrap() || serving == version,
            "round {round}: serving {serving:?}, acknowledged {acknowledged:?}"
        );
        if serving == version && status != Some(201) {
            acknowledged.push(version);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploy_survives_immediate_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let g = guests();
    for round in 0..3 {
        let rt =
            tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
        let version = format!("acked-{round}");
        let (s, v) = rt
            .deploy("tb", &testbed_manifest("tb", &version, ""), &g.testbed)
            .await
            .unwrap();
        assert_eq!(s, 201, "{v}");
        tokio::task::block_in_place(|| rt.kill9());
        let rt =
            tokio::task::block_in_place(|| Runtime::start(dir.path(), Options::default())).unwrap();
        assert_eq!(current_version(&rt).await, version);
        tokio::task::block_in_place(|| rt.kill9());
    }
}
