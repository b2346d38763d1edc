//! In-process `Host::invoke`: a fresh instance per call (instantiate from the `InstancePre`,
//! call `handle`, drop the store), as the server does for every HTTP request, minus HTTP.
//!
//! - `invoke/echo`: 200 "hello" (`benches/guests/echo-agent`);
//! - `invoke/hello`: `functions/hello` (a kv increment in sled, JSON in and out);
//! - `invoke_x16/echo`: 16 invocations in flight at once (throughput over the guest runtime).
//!
//! Target (issue 2): instantiate+invoke p50 <= 50 µs. `benches/run.sh` also runs `invoke/` pinned
//! to one core (`taskset -c 0`), which shows what the hand-off between threads on different
//! cores costs.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use slmfn_runtime::host::{Host, Request};
use slmfn_runtime::registry::Registry;

use super::Guest;

const IN_FLIGHT: usize = 16;

fn request() -> Request {
    Request {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: br#"{"name": "bench"}"#.to_vec(),
    }
}

fn invoke(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(dir.path()).expect("open registry");
    // No events sink, no model pool: neither guest uses them.
    let host = Host::new(
        registry,
        None,
        None,
        std::sync::Arc::new(slmfn_runtime::tools::Toolbox::empty()),
        Default::default(),
    )
    .expect("host");

    let mut group = c.benchmark_group("instantiate");
    for guest in [Guest::echo(), Guest::hello()] {
        let Some((manifest, component)) = guest.load() else {
            continue;
        };
        rt.block_on(host.deploy(guest.name, &manifest, &component))
            .expect("deploy");
        let response = rt
            .block_on(host.invoke(guest.name, request()))
            .expect("invoke");
        assert_eq!(response.status, 200, "{} answers 200", guest.name);

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("invoke", guest.name), |b| {
            b.to_async(&rt)
                .iter(|| async { host.invoke(guest.name, request()).await.expect("invoke") });
        });
        if guest.name == "echo" {
            group.throughput(Throughput::Elements(IN_FLIGHT as u64));
            group.bench_function(BenchmarkId::new("invoke_x16", guest.name), |b| {
                b.to_async(&rt).iter(|| in_flight(&host, guest.name));
            });
        }
    }
    group.finish();
}

/// `IN_FLIGHT` invocations at once; all must succeed.
async fn in_flight(host: &Arc<Host>, name: &str) {
    let calls = (0..IN_FLIGHT).map(|_| host.invoke(name, request()));
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.expect("invoke").status, 200);
    }
}

criterion_group!(benches, invoke);
