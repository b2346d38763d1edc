//! A model file mapped into memory (`memmap2`), so that loading copies no weights: our kernels
//! read the quantized blocks where the file holds them, and several runtime processes on one
//! node share the page cache's single copy of the file.
//!
//! The one `unsafe` of loading lives here (see [`MappedFile::open`]).

#![allow(unsafe_code)]

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions};

/// A read-only mapping of a whole file.
pub(crate) struct MappedFile {
    map: Mmap,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl MappedFile {
    /// Maps `path` read-only, its pages faulted in now (`MAP_POPULATE`: the load pays for
    /// them, not the first request).
    pub(crate) fn open(path: &Path) -> std::io::Result<Arc<Self>> {
        let file = File::open(path)?;
        // SAFETY: the mapping is read-only and private to this process, and nothing here ever
        // writes through it. What `Mmap` cannot rule out is another process truncating or
        // rewriting the file while it is mapped (reads would then fault or see new bytes).
        // Model files are never modified in place: the model cache writes a download to a
        // temporary file and renames it into place (a new inode; this mapping keeps the old
        // one), and a file given by path is the operator's, who must not rewrite a model a
        // running server uses — as with llama.cpp, which maps model files the same way.
        let map = unsafe { MmapOptions::new().populate().map(&file)? };
        Ok(Arc::new(Self { map }))
    }

    /// The whole file.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// Bytes of weights: owned (a copy, e.g. matrices stacked from parts the file keeps apart), or
/// a range of a mapped file.
#[derive(Clone, Debug)]
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    Mapped {
        file: Arc<MappedFile>,
        range: Range<usize>,
    },
}

impl Bytes {
    /// `range` of `file` (checked against its length).
    pub(crate) fn mapped(file: &Arc<MappedFile>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= file.bytes().len()).then(|| Self::Mapped {
            file: file.clone(),
            range,
        })
    }

    /// One range when `parts` are ranges of the same mapped file that follow each other in
    /// order; `None` otherwise.
    pub(crate) fn adjacent(parts: &[&Bytes]) -> Option<Self> {
        let mut merged: Option<(Arc<MappedFile>, Range<usize>)> = None;
        for part in parts {
            let Bytes::Mapped { file, range } = part else {
                return None;
            };
            merged = match merged {
                None => Some((file.clone(), range.clone())),
                Some((f, r)) if Arc::ptr_eq(&f, file) && r.end == range.start => {
                    Some((f, r.start..range.end))
                }
                Some(_) => return None,
            };
        }
        merged.map(|(file, range)| Self::Mapped { file, range })
    }

    /// Whether these bytes are a range of a mapped file.
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped { .. })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped { file, range } => &file.bytes()[range.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_file_and_merges_adjacent_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, (0u8..100).collect::<Vec<_>>()).unwrap();
        let file = MappedFile::open(&path).unwrap();
        let a = Bytes::mapped(&file, 10..20).unwrap();
        let b = Bytes::mapped(&file, 20..35).unwrap();
        assert_eq!(&a[..3], &[10, 11, 12]);
        let ab = Bytes::adjacent(&[&a, &b]).unwrap();
        assert!(ab.is_mapped());
        assert_eq!(&ab[..], &(10u8..35).collect::<Vec<_>>()[..]);
        // Out of order, apart, owned, or past the end: no.
        assert!(Bytes::adjacent(&[&b, &a]).is_none());
        let c = Bytes::mapped(&file, 40..50).unwrap();
        assert!(Bytes::adjacent(&[&a, &c]).is_none());
        assert!(Bytes::adjacent(&[&a, &Bytes::Owned(vec![1])]).is_none());
        assert!(Bytes::mapped(&file, 90..101).is_none());
        // Another file's ranges are not merged.
        let other = MappedFile::open(&path).unwrap();
        let d = Bytes::mapped(&other, 20..30).unwrap();
        assert!(Bytes::adjacent(&[&a, &d]).is_none());
    }
}
