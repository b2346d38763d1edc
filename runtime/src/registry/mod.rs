//! The function registry: functions, immutable revisions and their components, in sled.
//!
//! # Crash safety
//!
//! A deploy writes everything new under fresh keys first (the component blob, keyed by its
//! sha256; the revision record, keyed by a new uuid) and only then
//! swings the function's record — one key — to the new revision with a compare-and-swap. A crash
//! before the swing leaves an unreferenced revision that [`Registry::open`] sweeps away; a crash
//! after it leaves the new revision current. [`Registry::commit_revision`] flushes before it
//! returns, so a deploy acknowledged to a client survives `kill -9`.
//!
//! # Trees
//!
//! - `functions`: name → [`FunctionRecord`] (JSON)
//! - `revisions`: `name/uuid` → [`RevisionRecord`] (JSON)
//! - `components`: sha256 hex → component bytes (shared by revisions with equal bytes)
//! - `artifacts`: `sha256/engine-hash` → the SHA-256 of the precompiled component, then the
//!   component (a cache: safe to drop). Loading an artifact trusts its bytes (wasmtime maps
//!   them as native code), so [`Registry::artifact`] returns only bytes that match their
//!   digest and drops any other entry: a corrupted or foreign value is compiled again.
//! - `kv/<name>`: the function's key/value namespace; `kv-usage`: name → what it holds,
//!   for its quota ([`KvNamespace`])
//! - `quarantine`: `tree/key` → a record that did not decode at open, set aside so the
//!   runtime starts with the rest ([`QuarantinedRecord`])
//!
//! This module knows nothing of wasmtime or HTTP: artifacts are opaque bytes.

mod cas;
mod kv;
mod quarantine;
mod records;

use std::path::Path;

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(crate) use cas::update_checked;
pub use kv::{
    KeyPage, KvError, KvNamespace, KvQuota, KvUsage, MAX_KEY_BYTES, MAX_PAGE, MAX_VALUE_BYTES,
};
pub use quarantine::QuarantinedRecord;
pub use records::{FunctionRecord, RevisionRecord};

use crate::manifest::Manifest;

/// Registry failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another slmfn runtime (its lock is held); stop that runtime or pick another --data-dir"
    )]
    Locked {
        /// The data directory.
        path: String,
    },
    /// No such function.
    #[error("function {0:?} not found")]
    FunctionNotFound(String),
    /// No such revision of the function.
    #[error("revision {revision} of function {function:?} not found")]
    RevisionNotFound {
        /// The function.
        function: String,
        /// The revision asked for.
        revision: String,
    },
    /// Rollback without a target when there is no earlier revision.
    #[error("function {0:?} has no revision before the current one to roll back to")]
    NoEarlierRevision(String),
    /// A stored record could not be decoded.
    #[error("corrupt registry record {key}: {reason}")]
    Corrupt {
        /// The key of the record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// sled failed.
    #[error("registry storage error: {0}")]
    Storage(#[from] sled::Error),
}

/// Result alias for the registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// The registry handle; cheap to clone (sled handles are `Arc`s).
#[derive(Clone)]
pub struct Registry {
    db: sled::Db,
    functions: sled::Tree,
    revisions: sled::Tree,
    components: sled::Tree,
    artifacts: sled::Tree,
    quarantine: sled::Tree,
    kv_usage: sled::Tree,
}

/// What a deploy stores.
pub struct NewRevision<'a> {
    /// The validated manifest.
    pub manifest: &'a Manifest,
    /// The component bytes as uploaded.
    pub component: &'a [u8],
    /// The component's sha256 (hex), from [`sha256_hex`].
    pub component_sha256: &'a str,
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How long [`Registry::open`] waits for a held lock to be released.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io)
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"))
}

impl Registry {
    /// Opens (or creates) the registry in `dir`, quarantines records that do not decode and
    /// sweeps revisions left by interrupted deploys. Fails with [`RegistryError::Locked`] if another process holds `dir`.
    ///
    /// sled releases its lock from a background thread a moment after the last handle drops,
    /// so a reopen in the same process (a restart of an embedded runtime, the tests) can meet
    /// its own stale lock: a held lock is retried for up to [`LOCK_WAIT`] before it is
    /// reported.
    pub fn open(dir: &Path) -> Result<Self> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut backoff = std::time::Duration::from_millis(10);
        let db = loop {
            match sled::Config::new().path(dir.join("registry")).open() {
                Ok(db) => break db,
                Err(e) if is_lock_held(&e) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(RegistryError::Locked {
                            path: dir.display().to_string(),
                        });
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(200));
                }
                Err(other) => return Err(RegistryError::Storage(other)),
            }
        };
        let registry = Self {
            functions: db.open_tree("functions")?,
            revisions: db.open_tree("revisions")?,
            components: db.open_tree("components")?,
            artifacts: db.open_tree("artifacts")?,
            quarantine: db.open_tree("quarantine")?,
            kv_usage: db.open_tree("kv-usage")?,
            db,
        };
        registry.quarantine_corrupt()?;
        registry.sweep()?;
        registry.sweep_orphaned_kv()?;
        Ok(registry)
    }

    /// Removes revisions no function references (left by deploys interrupted before their
    /// commit) and components no revision references.
    fn sweep(&self) -> Result<()> {
        let functions = self.list_functions()?;
        let quarantined = self.quarantined_functions()?;
        let mut live_components = std::collections::HashSet::new();
        let mut removed = 0usize;
        for item in self.revisions.iter() {
            let (key, value) = item?;
            let rev: RevisionRecord = decode(&key, &value)?;
            let referenced = functions
                .iter()
                .any(|f| f.name == rev.function && f.revisions.contains(&rev.revision));
            if referenced || quarantined.contains(&rev.function) {
                live_components.insert(rev.component_sha256);
            } else {
                self.revisions.remove(&key)?;
                removed += 1;
            }
        }
        for item in self.components.iter() {
            let (key, _) = item?;
            let sha = String::from_utf8_lossy(&key).into_owned();
            if !live_components.contains(&sha) {
                self.components.remove(&key)?;
                self.remove_artifacts(&sha)?;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "swept revisions left by interrupted deploys");
            self.db.flush()?;
        }
        Ok(())
    }

    /// Drops the kv namespaces of functions that do not exist: a crash between a delete's
    /// commit point (the function record gone) and the drop of its tree must not let a later
    /// function of the same name inherit the old data. Only at open: a first deploy opens its
    /// function's tree before the record is committed, so a sweep while serving could drop
    /// the tree of a function being deployed.
    fn sweep_orphaned_kv(&self) -> Result<()> {
        let functions = self.list_functions()?;
        let quarantined = self.quarantined_functions()?;
        let names: std::collections::HashSet<&str> = functions
            .iter()
            .map(|f| f.name.as_str())
            .chain(quarantined.iter().map(String::as_str))
            .collect();
        let mut orphans = 0usize;
        for tree in self.db.tree_names() {
            let Some(name) = tree.strip_prefix(KV_PREFIX.as_bytes()) else {
                continue;
            };
            if !names.contains(String::from_utf8_lossy(name).as_ref()) {
                self.db.drop_tree(&tree)?;
                orphans += 1;
            }
        }
        for item in self.kv_usage.iter() {
            let (name, _) = item?;
            if !names.contains(String::from_utf8_lossy(&name).as_ref()) {
                self.kv_usage.remove(&name)?;
                orphans += 1;
            }
        }
        if orphans > 0 {
            tracing::info!(orphans, "dropped the kv namespaces of deleted functions");
            self.db.flush()?;
        }
        Ok(())
    }

    /// Stores a new revision of `manifest.name` and makes it current. Returns once the change
    /// is flushed to disk.
    pub async fn commit_revision(&self, new: NewRevision<'_>) -> Result<RevisionRecord> {
        let name = &new.manifest.name;
        let record = RevisionRecord {
            function: name.clone(),
            revision: Uuid::now_v7(),
            created_at: records::now_rfc3339(),
            component_sha256: new.component_sha256.to_string(),
            component_size: new.component.len() as u64,
            manifest: new.manifest.clone(),
        };
        // 1. New keys only: invisible until the function record points at them.
        if !self.components.contains_key(new.component_sha256)? {
            self.components
                .insert(new.component_sha256, new.component)?;
        }
        self.revisions
            .insert(revision_key(name, &record.revision), encode(&record))?;
        // 2. The commit point: one key, compare-and-swap so concurrent deploys all land.
        let revision = record.revision;
        let updated_at = record.created_at.clone();
        self.update_function(name, |current| {
            let mut f = current.unwrap_or_else(|| FunctionRecord {
                name: name.clone(),
                current: revision,
                revisions: Vec::new(),
                updated_at: updated_at.clone(),
            });
            f.revisions.push(revision);
            f.current = revision;
            f.updated_at = updated_at.clone();
            Some(f)
        })?;
        // 3. Durable before the caller acknowledges the deploy.
        self.flush().await?;
        Ok(record)
    }

    /// Points `name` at `target`, or at the revision deployed before the current one when
    /// `target` is `None`. Flushed before it returns.
    pub async fn rollback(&self, name: &str, target: Option<Uuid>) -> Result<RevisionRecord> {
        let target = self.rollback_target(name, target)?;
        let now = records::now_rfc3339();
        let updated = self.update_function(name, |current| {
            current.map(|mut f| {
                f.current = target;
                f.updated_at = now.clone();
                f
            })
        })?;
        if updated.is_none() {
            return Err(RegistryError::FunctionNotFound(name.to_string()));
        }
        self.flush().await?;
        self.revision(name, target)
    }

    /// The revision a rollback to `target` makes current (`None`: the one before the
    /// current), checked to exist; nothing changes.
    pub fn rollback_target(&self, name: &str, target: Option<Uuid>) -> Result<Uuid> {
        let function = self.function(name)?;
        Ok(match target {
            Some(t) if function.revisions.contains(&t) => t,
            Some(t) => {
                return Err(RegistryError::RevisionNotFound {
                    function: name.to_string(),
                    revision: t.to_string(),
                });
            }
            None => {
                let pos = function
                    .revisions
                    .iter()
                    .position(|r| *r == function.current);
                match pos {
                    Some(p) if p > 0 => function.revisions[p - 1],
                    _ => return Err(RegistryError::NoEarlierRevision(name.to_string())),
                }
            }
        })
    }

    /// Deletes the function, its revisions, their unshared components and its kv namespace.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let function = self.function(name)?;
        // The commit point: once the function record is gone the rest is garbage.
        self.functions.remove(name)?;
        self.flush().await?;
        for rev in &function.revisions {
            self.revisions.remove(revision_key(name, rev))?;
        }
        self.db.drop_tree(kv_tree_name(name))?;
        self.kv_usage.remove(name)?;
        self.sweep()?;
        self.flush().await?;
        Ok(())
    }

    /// One function.
    pub fn function(&self, name: &str) -> Result<FunctionRecord> {
        match self.functions.get(name)? {
            Some(v) => decode(name.as_bytes(), &v),
            None => Err(RegistryError::FunctionNotFound(name.to_string())),
        }
    }

    /// All functions, sorted by name.
    pub fn list_functions(&self) -> Result<Vec<FunctionRecord>> {
        self.functions
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    /// One revision of a function.
    pub fn revision(&self, name: &str, revision: Uuid) -> Result<RevisionRecord> {
        let key = revision_key(name, &revision);
        match self.revisions.get(&key)? {
            Some(v) => decode(key.as_bytes(), &v),
            None => Err(RegistryError::RevisionNotFound {
                function: name.to_string(),
                revision: revision.to_string(),
            }),
        }
    }

    /// The revisions of a function, oldest first.
    pub fn revisions(&self, name: &str) -> Result<Vec<RevisionRecord>> {
        let function = self.function(name)?;
        function
            .revisions
            .iter()
            .map(|r| self.revision(name, *r))
            .collect()
    }

    /// The component bytes with this sha256.
    pub fn component(&self, sha256: &str) -> Result<Option<sled::IVec>> {
        Ok(self.components.get(sha256)?)
    }

    /// The precompiled artifact of a component for an engine, if cached and intact: an entry
    /// whose bytes do not match the digest stored with them (corruption, an entry written by
    /// something else, the format of an older runtime) is logged, removed and reported absent,
    /// so that the caller compiles the component again.
    pub fn artifact(&self, sha256: &str, engine_hash: &str) -> Result<Option<sled::IVec>> {
        let key = artifact_key(sha256, engine_hash);
        let Some(stored) = self.artifacts.get(&key)? else {
            return Ok(None);
        };
        if stored.len() >= ARTIFACT_DIGEST
            && Sha256::digest(&stored[ARTIFACT_DIGEST..])[..] == stored[..ARTIFACT_DIGEST]
        {
            return Ok(Some(
                stored.subslice(ARTIFACT_DIGEST, stored.len() - ARTIFACT_DIGEST),
            ));
        }
        tracing::warn!(
            component = sha256,
            engine = engine_hash,
            "a cached precompiled artifact does not match its digest; dropped, the component \
             will be compiled again"
        );
        self.artifacts.remove(key)?;
        Ok(None)
    }

    /// Caches a precompiled artifact behind its digest (not flushed: it can always be
    /// rebuilt).
    pub fn put_artifact(&self, sha256: &str, engine_hash: &str, artifact: &[u8]) -> Result<()> {
        let mut stored = Vec::with_capacity(ARTIFACT_DIGEST + artifact.len());
        stored.extend_from_slice(&Sha256::digest(artifact));
        stored.extend_from_slice(artifact);
        self.artifacts
            .insert(artifact_key(sha256, engine_hash), stored)?;
        Ok(())
    }

    fn remove_artifacts(&self, sha256: &str) -> Result<()> {
        for item in self.artifacts.scan_prefix(format!("{sha256}/")) {
            let (k, _) = item?;
            self.artifacts.remove(k)?;
        }
        Ok(())
    }

    /// The key/value namespace of a function.
    pub fn kv(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(kv_tree_name(name))?)
    }

    /// A tree of the registry's database for another part of the runtime (the events' dedupe
    /// store), so that everything lives in one sled database under the data dir.
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Drops the tree `name` of the runtime's own state, if there is one.
    pub(crate) fn drop_tree(&self, name: &str) -> Result<()> {
        self.db.drop_tree(name)?;
        Ok(())
    }

    /// Flushes everything to disk. sled's `flush_async` can stall when several databases share
    /// its background pool, so the blocking flush runs on tokio's blocking pool instead.
    pub async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| RegistryError::Storage(sled::Error::ReportableBug(e.to_string())))??;
        Ok(())
    }

    fn update_function(
        &self,
        name: &str,
        mut f: impl FnMut(Option<FunctionRecord>) -> Option<FunctionRecord>,
    ) -> Result<Option<FunctionRecord>> {
        let result = update_checked(&self.functions, name, |old| {
            let current = old
                .map(|v| decode::<FunctionRecord>(name.as_bytes(), v))
                .transpose()?;
            Ok::<_, RegistryError>(f(current).map(|r| encode(&r)))
        })??;
        result.map(|v| decode(name.as_bytes(), &v)).transpose()
    }
}

fn revision_key(name: &str, revision: &Uuid) -> String {
    format!("{name}/{revision}")
}

/// Bytes of the SHA-256 digest in front of each stored artifact.
const ARTIFACT_DIGEST: usize = 32;

fn artifact_key(sha256: &str, engine_hash: &str) -> String {
    format!("{sha256}/{engine_hash}")
}

/// Prefix of the kv trees' names.
const KV_PREFIX: &str = "kv/";

fn kv_tree_name(name: &str) -> String {
    format!("{KV_PREFIX}{name}")
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("registry records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| RegistryError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
