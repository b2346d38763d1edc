//! Hashing while copying, and hashing a file: the sha256 every cached file is checked by.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::SourceError;
use super::progress::PullProgress;

const COPY_BUFFER: usize = 1 << 20;

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
