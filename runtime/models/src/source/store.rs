//! Writing into the cache: a file stored through a hashed temporary file and installed
//! atomically (file renamed into place, sidecar written last), and the leftovers of
//! interrupted pulls. See [`super::cache`] for the layout.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use tempfile::{NamedTempFile, TempDir, TempPath};

use super::ModelSource;
use super::cache::{CachedModel, ModelCache, Sidecar, mtime_ns, remove_if_exists};
use super::entry::ModelEntry;
use super::error::SourceError;
use super::hashing::copy_hashing;
use super::progress::PullProgress;

/// Interrupted pulls older than this are removed by the next pull of the same model.
const STALE_PARTIAL: Duration = Duration::from_secs(3600);
const PARTIAL_SUFFIX: &str = ".partial";

impl ModelCache {
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

    pub(super) fn write_sidecar(&self, sidecar: &Sidecar) -> Result<(), SourceError> {
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

    /// A hidden temporary file in the cache directory (same file system: the final rename is
    /// atomic), deleted when dropped.
    pub(super) fn temp_file(&self, name: &str) -> Result<NamedTempFile, SourceError> {
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
    pub(super) fn remove_stale_partials(&self, name: &str) {
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
