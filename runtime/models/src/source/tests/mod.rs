//! Tests of model sources and the cache, by concern; the shared fixtures are here.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::*;

mod caching;
mod catalog;
mod fetching;
mod parsing;

const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Records what a pull reports.
#[derive(Default)]
struct Recorder {
    stages: Vec<(Stage, Option<u64>)>,
    bytes: u64,
    finished: bool,
}

impl PullProgress for Recorder {
    fn stage(&mut self, stage: Stage, _detail: &str, total: Option<u64>) {
        self.stages.push((stage, total));
    }
    fn advance(&mut self, bytes: u64) {
        self.bytes += bytes;
    }
    fn finish(&mut self) {
        self.finished = true;
    }
}

/// Deterministic, poorly compressible bytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Names of the files in `dir`, sorted (hidden ones included).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A local model file and a cache in one temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    model_path: PathBuf,
    data: Vec<u8>,
    cache: ModelCache,
}

fn fixture(len: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = bytes(len, 7);
    let model_path = tmp.path().join("tiny.gguf");
    fs::write(&model_path, &data).unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    Fixture {
        _tmp: tmp,
        model_path,
        data,
        cache,
    }
}

impl Fixture {
    fn entry(&self) -> ModelEntry {
        resolve(self.model_path.to_str().unwrap()).unwrap()
    }
}
