//! The model cache: one file per model plus a JSON sidecar, written atomically.
//!
//! Layout of the cache directory:
//!
//! ```text
//! smollm2.gguf                 the model file (`<name>.<extension of the source file>`)
//! smollm2.json                 its sidecar: name, source, file, sha256, size, pulled_at, mtime_ns
//! smollm2.gguf.corrupt         a file that failed verification, moved aside
//! .smollm2.XXXXXX.partial      a pull in progress (or interrupted: removed after an hour)
//! ```
//!
//! A pull writes the file under a hidden temporary name while hashing it, checks the digest,
//! removes the old sidecar, renames the file into place and writes the new sidecar last (itself
//! through a temporary file and a rename). A file without a sidecar, or whose sidecar does not
//! match it, is never reported as cached, so an interrupted pull cannot leave a file that looks
//! valid.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::entry::ModelEntry;
use super::error::SourceError;
use super::hashing::hash_file;
use super::progress::{PullProgress, Stage};
use super::validate_model_name;
use crate::spec::ModelSpec;

/// What the cache records about a pulled file (`<name>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// The model's name.
    pub name: String,
    /// The source it was pulled from (as a string: [`ModelSource`]'s form).
    pub source: String,
    /// The file's name in the cache directory.
    pub file: String,
    /// The file's sha256, lower-case hex.
    pub sha256: String,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was pulled (RFC 3339, UTC).
    pub pulled_at: String,
    /// The file's modification time (nanoseconds since the epoch) when last hashed: while size
    /// and mtime are unchanged, [`ModelCache::verify`] trusts `sha256` without re-hashing.
    #[serde(default)]
    pub mtime_ns: u64,
}

/// A model file in the cache with its sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModel {
    /// The model's name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// What was recorded at pull time.
    pub sidecar: Sidecar,
}

/// What the cache holds for an entry, from the sidecar and one `stat` (no hashing, no change
/// to the cache): for listings. [`ModelCache::verify`] is the check before use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Nothing cached under this name.
    Missing,
    /// Cached from this source, with the pinned digest, unchanged since it was hashed.
    Ready(CachedModel),
    /// Cached, but the file's size or mtime changed since it was hashed: `verify` will re-hash.
    Changed(CachedModel),
    /// Cached from another source.
    OtherSource(CachedModel),
    /// Cached with a digest other than the pinned one: `verify` will reject it.
    DigestMismatch(CachedModel),
    /// The sidecar is unreadable or its file is missing.
    Invalid(String),
}

impl CacheStatus {
    /// The cached model, whatever its state.
    pub fn model(&self) -> Option<&CachedModel> {
        match self {
            CacheStatus::Ready(m)
            | CacheStatus::Changed(m)
            | CacheStatus::OtherSource(m)
            | CacheStatus::DigestMismatch(m) => Some(m),
            CacheStatus::Missing | CacheStatus::Invalid(_) => None,
        }
    }

    /// A word for listings: `yes`, `no`, `changed`, `other-source`, `mismatch`, `invalid`.
    pub fn label(&self) -> &'static str {
        match self {
            CacheStatus::Missing => "no",
            CacheStatus::Ready(_) => "yes",
            CacheStatus::Changed(_) => "changed",
            CacheStatus::OtherSource(_) => "other-source",
            CacheStatus::DigestMismatch(_) => "mismatch",
            CacheStatus::Invalid(_) => "invalid",
        }
    }
}

/// A directory of model files with their sidecars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCache {
    pub(super) dir: PathBuf,
}

impl ModelCache {
    /// A cache in `dir` (created at the first pull).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache in [`ModelCache::dir_from_env`].
    pub fn from_env() -> Result<Self, SourceError> {
        Ok(Self::new(Self::dir_from_env()?))
    }

    /// `SLMFN_MODELS_DIR`, else `slmfn/models` in the user's cache directory
    /// (`$XDG_CACHE_HOME`, else `$HOME/.cache`, as the `dirs` crate finds it).
    pub fn dir_from_env() -> Result<PathBuf, SourceError> {
        if let Some(dir) = std::env::var_os("SLMFN_MODELS_DIR").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        dirs::cache_dir()
            .map(|cache| cache.join("slmfn").join("models"))
            .ok_or_else(|| SourceError::Config {
                path: PathBuf::new(),
                reason: "no cache directory: set SLMFN_MODELS_DIR (or HOME)".into(),
            })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn sidecar_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The sidecar of `name`: `Ok(None)` when there is none, `Err(reason)` when it is
    /// unreadable.
    pub(super) fn read_sidecar(&self, name: &str) -> Result<Option<Sidecar>, String> {
        let path = self.sidecar_path(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let sidecar: Sidecar = serde_json::from_str(&text)
            .map_err(|e| format!("invalid sidecar {}: {e}", path.display()))?;
        if sidecar.name != name
            || sidecar.file.is_empty()
            || sidecar.file.contains(['/', '\\'])
            || sidecar.file.starts_with('.')
            || sidecar.file == format!("{name}.json")
        {
            return Err(format!("invalid sidecar {}", path.display()));
        }
        Ok(Some(sidecar))
    }

    pub(super) fn cached(&self, sidecar: Sidecar) -> CachedModel {
        CachedModel {
            name: sidecar.name.clone(),
            path: self.dir.join(&sidecar.file),
            sidecar,
        }
    }

    /// What the cache holds for `entry`, without hashing or changing anything.
    pub fn status(&self, entry: &ModelEntry) -> CacheStatus {
        if validate_model_name(&entry.name).is_err() {
            return CacheStatus::Missing;
        }
        let sidecar = match self.read_sidecar(&entry.name) {
            Ok(Some(sidecar)) => sidecar,
            Ok(None) => return CacheStatus::Missing,
            Err(reason) => return CacheStatus::Invalid(reason),
        };
        let model = self.cached(sidecar);
        let meta = match fs::metadata(&model.path) {
            Ok(meta) => meta,
            Err(e) => {
                return CacheStatus::Invalid(format!("{}: {e}", model.path.display()));
            }
        };
        if model.sidecar.source != entry.source.to_string() {
            CacheStatus::OtherSource(model)
        } else if entry
            .sha256
            .as_ref()
            .is_some_and(|pinned| *pinned != model.sidecar.sha256)
        {
            CacheStatus::DigestMismatch(model)
        } else if meta.len() != model.sidecar.size || mtime_ns(&meta) != model.sidecar.mtime_ns {
            CacheStatus::Changed(model)
        } else {
            CacheStatus::Ready(model)
        }
    }

    /// Every model in the cache with a readable sidecar, by name.
    pub fn list(&self) -> Result<Vec<CachedModel>, SourceError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SourceError::io("list", &self.dir, e)),
        };
        let mut models = Vec::new();
        for dirent in entries {
            let dirent = dirent.map_err(|e| SourceError::io("list", &self.dir, e))?;
            let file_name = dirent.file_name();
            let Some(name) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|n| validate_model_name(n).is_ok())
            else {
                continue;
            };
            if let Ok(Some(sidecar)) = self.read_sidecar(name) {
                models.push(self.cached(sidecar));
            }
        }
        models.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(models)
    }

    /// The check before first use: the cached file of `entry`, if it came from the entry's
    /// source and has the pinned digest (or, unpinned, the digest recorded at pull time).
    ///
    /// Cheap while the file's size and mtime are those recorded in the sidecar (no hashing);
    /// otherwise the file is re-hashed once and the sidecar updated. On a mismatch the file is
    /// moved aside (`<file>.corrupt`), its sidecar removed, and the error names both digests.
    pub fn verify(&self, entry: &ModelEntry) -> Result<CachedModel, SourceError> {
        self.verify_with(entry, &mut ())
    }

    /// The pool's spec for `entry`, its file verified (see [`ModelCache::verify`]).
    pub fn verified_spec(&self, entry: &ModelEntry) -> Result<ModelSpec, SourceError> {
        Ok(entry.to_spec(self.verify(entry)?.path))
    }

    pub(super) fn verify_with(
        &self,
        entry: &ModelEntry,
        progress: &mut dyn PullProgress,
    ) -> Result<CachedModel, SourceError> {
        entry.validate()?;
        let not_cached = |detail: String| SourceError::NotCached {
            name: entry.name.clone(),
            dir: self.dir.clone(),
            detail,
        };
        let sidecar = match self.read_sidecar(&entry.name) {
            Ok(Some(sidecar)) => sidecar,
            Ok(None) => return Err(not_cached(String::new())),
            Err(reason) => return Err(not_cached(format!("; {reason}"))),
        };
        let source = entry.source.to_string();
        if sidecar.source != source {
            return Err(not_cached(format!(
                "; the cached file came from {}, not {source}",
                sidecar.source
            )));
        }
        let model = self.cached(sidecar);
        let expected = entry
            .sha256
            .clone()
            .unwrap_or_else(|| model.sidecar.sha256.clone());
        if model.sidecar.sha256 != expected {
            let actual = model.sidecar.sha256.clone();
            return Err(self.reject(&model, expected, actual));
        }
        let meta = match fs::metadata(&model.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_file(self.sidecar_path(&entry.name));
                return Err(not_cached("; its file is missing".into()));
            }
            Err(e) => return Err(SourceError::io("read", &model.path, e)),
        };
        if meta.len() == model.sidecar.size && mtime_ns(&meta) == model.sidecar.mtime_ns {
            return Ok(model);
        }
        progress.stage(Stage::Hash, &model.sidecar.file, Some(meta.len()));
        let (actual, size) = hash_file(&model.path, progress)?;
        if actual != expected {
            return Err(self.reject(&model, expected, actual));
        }
        // Same content, new mtime (touched, copied back): record it so the next check is cheap.
        let meta =
            fs::metadata(&model.path).map_err(|e| SourceError::io("read", &model.path, e))?;
        let mut sidecar = model.sidecar;
        sidecar.size = size;
        sidecar.mtime_ns = mtime_ns(&meta);
        // A read-only cache (an image layer, a volume mounted read-only in a pod) keeps its old
        // sidecar: the file was just verified, so it is served; the next start hashes again.
        if let Err(e) = self.write_sidecar(&sidecar) {
            tracing::warn!(model = %sidecar.name, error = %e, "verified the cached model but cannot update its sidecar (read-only cache?); serving it, the next start hashes it again");
        }
        Ok(self.cached(sidecar))
    }

    /// Takes a file that failed verification out of use: its sidecar removed, the file renamed
    /// to `<file>.corrupt` (deleted if that fails).
    fn reject(&self, model: &CachedModel, expected: String, actual: String) -> SourceError {
        let _ = fs::remove_file(self.sidecar_path(&model.name));
        let aside = self.dir.join(format!("{}.corrupt", model.sidecar.file));
        let moved_to = match fs::rename(&model.path, &aside) {
            Ok(()) => Some(aside),
            Err(_) => {
                let _ = fs::remove_file(&model.path);
                None
            }
        };
        SourceError::DigestMismatch {
            name: model.name.clone(),
            expected,
            actual,
            moved_to,
        }
    }

    pub(super) fn create_dir(&self) -> Result<(), SourceError> {
        fs::create_dir_all(&self.dir).map_err(|e| SourceError::io("create", &self.dir, e))
    }

    /// Removes `name` from the cache (sidecar first, then the file). Returns whether there was
    /// anything.
    pub fn remove(&self, name: &str) -> Result<bool, SourceError> {
        validate_model_name(name)?;
        let sidecar = self.read_sidecar(name).ok().flatten();
        let removed = remove_if_exists(&self.sidecar_path(name))?;
        if let Some(sidecar) = sidecar {
            remove_if_exists(&self.dir.join(sidecar.file))?;
        }
        Ok(removed)
    }
}

pub(super) fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(super) fn remove_if_exists(path: &Path) -> Result<bool, SourceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SourceError::io("remove", path, e)),
    }
}
