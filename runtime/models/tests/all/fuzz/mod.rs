//! Property tests (proptest) of what a hostile caller or a malformed file can hand the model
//! core.
//!
//! - `gguf`: malformed model files are refused with a load error, never a panic or a huge
//!   allocation.
//! - `gguf_regressions`: the malformed files those properties found, written out.
//! - `template`: chat templates render hostile messages deterministically and verbatim.
//! - `layout`: where the fields of a GGUF header lie (the map `gguf` mutates by).
//! - `alloc`: the largest single allocation of a thread (this binary's global allocator).
//!

mod alloc;
mod gguf;
mod gguf_regressions;
mod layout;
mod template;
