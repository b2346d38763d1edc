//! Quarantine: a function or revision record that does not decode (a damaged disk, a record
//! written by an incompatible version) must not keep the runtime from starting. At open it
//! moves, bytes and all, from its tree to `quarantine`, is logged, and the runtime starts with
//! the rest. The revisions of a quarantined function stay (the sweep keeps them), so an
//! operator who repairs the record loses nothing. `/admin/quarantine` lists what is there and
//! `slmfn_registry_quarantined_records` counts it.

use serde::{Deserialize, Serialize};

use super::records::{FunctionRecord, RevisionRecord, now_rfc3339};
use super::{Registry, Result, encode};

/// A record set aside at open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// The tree it was in (`functions` or `revisions`).
    pub tree: String,
    /// Its key there (a function name, or `name/revision`).
    pub key: String,
    /// Why it does not decode.
    pub reason: String,
    /// When it was set aside (RFC 3339).
    pub quarantined_at: String,
    /// Its bytes, hex.
    pub value_hex: String,
}

impl Registry {
    /// Moves every function and revision record that does not decode to `quarantine`.
    pub(super) fn quarantine_corrupt(&self) -> Result<()> {
        let mut moved = 0usize;
        for (name, tree, check) in [
            (
                "functions",
                &self.functions,
                decodes::<FunctionRecord> as fn(&[u8]) -> _,
            ),
            ("revisions", &self.revisions, decodes::<RevisionRecord>),
        ] {
            for item in tree.iter() {
                let (key, value) = item?;
                let Err(reason) = check(&value) else {
                    continue;
                };
                let record = QuarantinedRecord {
                    tree: name.to_string(),
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason,
                    quarantined_at: now_rfc3339(),
                    value_hex: hex::encode(&value),
                };
                tracing::error!(
                    tree = name,
                    key = %record.key,
                    reason = %record.reason,
                    "a registry record does not decode; quarantined, the runtime starts without it (see /admin/quarantine)"
                );
                // Copied before it is removed: a crash in between leaves both, and the next
                // open quarantines it again.
                self.quarantine
                    .insert(format!("{name}/{}", record.key), encode(&record))?;
                tree.remove(&key)?;
                moved += 1;
            }
        }
        if moved > 0 {
            self.db.flush()?;
        }
        Ok(())
    }

    /// What is in quarantine, by key.
    pub fn quarantined(&self) -> Result<Vec<QuarantinedRecord>> {
        self.quarantine
            .iter()
            .map(|item| {
                let (k, v) = item?;
                super::decode(&k, &v)
            })
            .collect()
    }

    /// How many records are in quarantine.
    pub fn quarantined_count(&self) -> usize {
        self.quarantine.len()
    }

    /// The names of functions whose record is in quarantine.
    pub(super) fn quarantined_functions(&self) -> Result<Vec<String>> {
        self.quarantine
            .scan_prefix("functions/")
            .keys()
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k["functions/".len()..]).into_owned())
            })
            .collect()
    }
}

fn decodes<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(value)
        .map(drop)
        .map_err(|e| e.to_string())
}
