//! The records the registry stores, as JSON.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::manifest::Manifest;

/// A function: its revisions (oldest first) and the current one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The function's name.
    pub name: String,
    /// The revision that serves invocations.
    pub current: Uuid,
    /// Every revision, in deploy order.
    pub revisions: Vec<Uuid>,
    /// When the current pointer last moved (RFC 3339).
    pub updated_at: String,
}

/// An immutable revision: a component and the manifest it was deployed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// The function it belongs to.
    pub function: String,
    /// Its id (uuid v7: time-ordered).
    pub revision: Uuid,
    /// When it was deployed (RFC 3339).
    pub created_at: String,
    /// sha256 of the component bytes (hex).
    pub component_sha256: String,
    /// Size of the component in bytes.
    pub component_size: u64,
    /// The manifest it was deployed with.
    pub manifest: Manifest,
}

/// Now, as RFC 3339 UTC with millisecond precision.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
