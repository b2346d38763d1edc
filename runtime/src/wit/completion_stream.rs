//! The `completion-stream` resource of `slmfn:agent/inference`: a generation in progress held
//! in the guest's resource table (here, so the bindings name it without importing the host
//! adapter that implements it).

use std::time::Instant;

use crate::inference::Generation;

/// A streaming generation held in the guest's resource table.
#[allow(unreachable_pub)] // bindgen re-exports it from the generated module
pub struct CompletionStream {
    pub(crate) generation: Generation,
    pub(crate) started: Instant,
}
