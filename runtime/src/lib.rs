//! # slmfn-runtime
//!
//! The slmfn host: serves agent functions (WebAssembly components of the `slmfn:agent` world)
//! over HTTP, keeps them in a crash-safe registry, and gives them host capabilities.
//!
//! # Layout
//!
//! - [`config`]: one [`RuntimeConfig`] from flags and environment.
//! - [`manifest`]: the function manifest (`fn.toml`) and name rules.
//! - [`registry`]: functions and immutable revisions in sled; the current pointer; kv namespaces.
//! - [`host`]: the wasmtime engine, precompiled components, per-request stores, WIT host impls.
//! - `wit`: the bindings generated from `sdk/wit` (host and events share its types).
//! - [`inference`]: the async face of the warm model pool (`slmfn-models`) for the adapters.
//! - [`events`]: the CloudEvents model at the edges (HTTP modes, triggers, the WIT record, the
//!   `K_SINK` sink).
//! - [`delivery`]: events to the agents whose triggers match (replies, dedupe).
//! - [`server`]: axum routes only (invoke, admin, health, the OpenAI-compatible `/v1` API,
//!   `/metrics`); translates HTTP to host and inference calls.
//! - [`metrics`]: Prometheus metrics (invocations, generations, the model pool).
//! - [`model_setup`]: builds the warm model pool from the configuration.
//! - [`logging`]: tracing subscriber setup.
//! - [`connections`]: the accept loop (header and idle timeouts, graceful shutdown).
//! - `serve`: the process lifecycle (start, ready, drain on SIGTERM).
//!
//! Data flows one way: server → host → registry.

pub mod config;
pub mod connections;
pub mod delivery;
pub mod events;
pub mod host;
pub mod inference;
pub mod manifest;
pub mod metrics;
pub mod model_setup;
pub mod registry;
pub mod server;
pub mod tools;
mod wit;

pub use config::RuntimeConfig;
pub use manifest::Manifest;
pub mod logging;
mod serve;

pub use serve::{ServeError, serve};
