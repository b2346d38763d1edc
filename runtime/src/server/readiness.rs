//! Readiness: not ready until the registry is open and current revisions are loaded; not ready
//! again once draining starts (so Knative stops routing here). Apart from it, whether the
//! functions are loaded: until then a function that is not loaded may be one still loading,
//! so `/fn` answers 503 (retry) rather than 404.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why the runtime is not ready, or `None` when it is.
#[derive(Debug)]
pub struct Readiness {
    reason: Mutex<Option<String>>,
    functions_loaded: AtomicBool,
}

impl Readiness {
    /// Not ready, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            reason: Mutex::new(Some(reason.into())),
            functions_loaded: AtomicBool::new(false),
        }
    }

    /// Marks the stored functions loaded (models may still be preloading).
    pub fn set_functions_loaded(&self) {
        self.functions_loaded.store(true, Ordering::Release);
    }

    /// Whether the stored functions are loaded.
    pub fn functions_loaded(&self) -> bool {
        self.functions_loaded.load(Ordering::Acquire)
    }

    /// Marks ready.
    pub fn set_ready(&self) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Marks not ready.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    /// The reason it is not ready.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
