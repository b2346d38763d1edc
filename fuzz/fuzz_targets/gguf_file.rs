//! A model file of any bytes, taken the pool's way: the header, the architecture check, the
//! memory estimate, and (for a model small enough) the load, a chat prompt and one greedy
//! token. Any of them may refuse the file with an error; none may panic, abort or allocate
//! without bound (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch the last).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slmfn_models::gguf::GgufFile;
use slmfn_models::{CancelToken, Message, Model, SamplingParams};

/// Models the target loads: the tiny seed is a few hundred KiB.
const BUDGET: u64 = 64 << 20;

fuzz_target!(|bytes: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    let Ok(header) = GgufFile::open(&path) else {
        return;
    };
    if header.ensure_supported().is_err() {
        return;
    }
    let Ok(meta) = header.metadata(None, false) else {
        return;
    };
    if meta.weights_bytes.saturating_add(meta.session_bytes()) > BUDGET {
        return;
    }
    drop(header);
    let Ok(model) = Model::load(&path) else {
        return;
    };
    let Ok(prompt) = model.encode_chat(&[Message::user("hello world")]) else {
        return;
    };
    let mut session = model.session();
    let _ = session.generate(&prompt, &SamplingParams::greedy(1), &CancelToken::new(), |_| {});
});
