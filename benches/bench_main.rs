//! Criterion benches: `cargo bench --bench bench_main` (one file per area in `benchmarks/`).
//! `benches/run.sh` runs them with the HTTP load harness (`http_load.rs`) and writes
//! `benches/RESULTS.md`.

mod benchmarks;

criterion::criterion_main!(benchmarks::instantiate::benches);
