//! Readiness: not ready until the registry is open and current revisions are loaded; not ready
//! again once draining starts (so Knative stops routing here).

use std::sync::Mutex;

/// Why the runtime is not ready, or `None` when it is.
#[derive(Debug)]
pub struct Readiness {
    reason: Mutex<Option<String>>,
}

impl Readiness {
    /// Not ready, for `reason`.
    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            reason: Mutex::new(Some(reason.into())),
        }
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
