//! Integration tests of slmfn-models, one binary (wasmtime's `tests/all` layout).
//!
//! - `tiny`: a tiny random llama each test writes itself (real GGUF, real tokenizer and template).
//! - `constraint`: constrained decoding (JSON schema, Lark, regex) on the tiny model.
//! - `batching`: sessions of one model stepping together (`parallel > 1`), cache affinity.
//! - `pool`: the warm pool (sharing, queueing, overload, keep-alive, eviction, failures).
//! - `real`: SmolLM2-135M-Instruct, only when `SLMFN_MODEL_PATH` points at its GGUF.
//! - `fuzz`: property tests (proptest) of hostile inputs: malformed GGUF files, adversarial
//!   chat messages.

mod batching;
mod constraint;
mod fuzz;
mod pool;
mod real;
mod tiny;

use std::path::PathBuf;

use slmfn_models::testing::TinyModel;
use slmfn_models::{CancelToken, Completion, LoadOptions, Model, SamplingParams, Session};

/// Writes `spec` into a fresh temp dir and loads it. The dir lives as long as the guard.
pub fn tiny_model(spec: &TinyModel) -> (Model, tempfile::TempDir, PathBuf) {
    tiny_model_with(spec, &LoadOptions::default())
}

/// [`tiny_model`] with load options.
pub fn tiny_model_with(
    spec: &TinyModel,
    options: &LoadOptions,
) -> (Model, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    spec.write(&path).expect("write tiny model");
    let model = Model::load_with(&path, options).expect("load tiny model");
    (model, dir, path)
}

/// Runs a generation and returns the completion plus the streamed chunks.
pub fn generate(
    session: &mut Session,
    prompt: &[u32],
    params: &SamplingParams,
) -> (Completion, Vec<String>) {
    let mut chunks = Vec::new();
    let completion = session
        .generate(prompt, params, &CancelToken::new(), |c| {
            chunks.push(c.to_string())
        })
        .expect("generate");
    assert_eq!(
        chunks.concat(),
        completion.text,
        "chunks must add up to the text"
    );
    assert!(chunks.iter().all(|c| !c.is_empty()), "no empty chunks");
    (completion, chunks)
}

/// The types the runtime shares across threads and async tasks.
#[test]
fn handles_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Model>();
    send_sync::<slmfn_models::ModelPool>();
    send_sync::<CancelToken>();
    send::<Session>();
    send::<slmfn_models::Job>();
}
