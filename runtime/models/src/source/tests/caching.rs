//! The cache: pulls of local files, verification, digests, interrupted and corrupt files.

use std::fs;
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn pulls_a_local_file_into_the_cache() {
    let fx = fixture(3 << 20);
    let entry = fx.entry();
    assert_eq!(entry.name, "tiny");
    assert_eq!(fx.cache.status(&entry), CacheStatus::Missing);

    let mut progress = Recorder::default();
    let pulled = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut progress)
        .unwrap();
    assert!(pulled.fetched);
    assert!(progress.finished);
    assert_eq!(progress.stages, [(Stage::Copy, Some(3 << 20))]);
    assert_eq!(progress.bytes, 3 << 20);

    let model = &pulled.model;
    assert_eq!(model.path, fx.cache.dir().join("tiny.gguf"));
    assert_eq!(fs::read(&model.path).unwrap(), fx.data);
    let sidecar: Sidecar =
        serde_json::from_str(&fs::read_to_string(fx.cache.dir().join("tiny.json")).unwrap())
            .unwrap();
    assert_eq!(sidecar, model.sidecar);
    assert_eq!(sidecar.sha256, sha256(&fx.data));
    assert_eq!(sidecar.size, 3 << 20);
    assert_eq!(sidecar.source, fx.model_path.display().to_string());
    assert_eq!(sidecar.file, "tiny.gguf");
    assert!(
        humantime::parse_rfc3339(&sidecar.pulled_at).is_ok(),
        "{}",
        sidecar.pulled_at
    );
    assert_eq!(listing(fx.cache.dir()), ["tiny.gguf", "tiny.json"]);

    // Cached: verify is cheap (no hashing), a second pull fetches nothing.
    let mut progress = Recorder::default();
    assert_eq!(fx.cache.verify_with(&entry, &mut progress).unwrap(), *model);
    assert!(progress.stages.is_empty());
    let again = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    assert!(!again.fetched);
    assert_eq!(again.model, *model);
    assert_eq!(fx.cache.status(&entry), CacheStatus::Ready(model.clone()));
    assert_eq!(fx.cache.list().unwrap(), vec![model.clone()]);

    // The spec the pool gets.
    let spec = fx.cache.verified_spec(&entry).unwrap();
    assert_eq!(spec.path, model.path);
    assert_eq!(spec.name, "tiny");

    // Forced: fetched again, same result.
    let forced = PullOptions {
        force: true,
        ..PullOptions::default()
    };
    assert!(fx.cache.pull(&entry, &forced, &mut ()).unwrap().fetched);
    assert_eq!(listing(fx.cache.dir()), ["tiny.gguf", "tiny.json"]);

    assert!(fx.cache.remove("tiny").unwrap());
    assert_eq!(listing(fx.cache.dir()), Vec::<String>::new());
    assert!(!fx.cache.remove("tiny").unwrap());
}

#[test]
fn missing_local_file_is_a_clear_error() {
    let fx = fixture(10);
    let entry = resolve("/nonexistent/dir/m.gguf").unwrap();
    let err = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open /nonexistent/dir/m.gguf:"),
        "{err}"
    );
    let err = fx.cache.verify(&entry).unwrap_err();
    assert!(matches!(err, SourceError::NotCached { .. }));
    assert!(err.to_string().contains("run `fn models pull m`"), "{err}");
}

#[test]
fn pinned_digest_mismatch_on_pull_discards_the_file() {
    let fx = fixture(100_000);
    let mut entry = fx.entry();
    let wrong = sha256(b"something else");
    entry.sha256 = Some(wrong.clone());
    let err = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap_err();
    match &err {
        SourceError::DigestMismatch {
            name,
            expected,
            actual,
            moved_to,
        } => {
            assert_eq!(name, "tiny");
            assert_eq!(*expected, wrong);
            assert_eq!(*actual, sha256(&fx.data));
            assert_eq!(*moved_to, None);
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&format!("expected {wrong}")), "{message}");
    assert!(
        message.contains(&format!("got {}", sha256(&fx.data))),
        "{message}"
    );
    // Nothing usable, nothing half-written.
    assert_eq!(listing(fx.cache.dir()), Vec::<String>::new());
    assert!(matches!(
        fx.cache.verify(&entry),
        Err(SourceError::NotCached { .. })
    ));

    // With the right pin it goes through.
    entry.sha256 = Some(sha256(&fx.data));
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
}

#[test]
fn corrupted_cached_file_is_detected_and_moved_aside() {
    let fx = fixture(200_000);
    let mut entry = fx.entry();
    entry.sha256 = Some(sha256(&fx.data));
    let model = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap()
        .model;

    // Flip one byte (same size; the mtime changes).
    let mut corrupt = fx.data.clone();
    corrupt[1000] ^= 0xff;
    fs::write(&model.path, &corrupt).unwrap();
    // Make the change visible to the cheap check even on a coarse-grained clock.
    let file = fs::File::options().write(true).open(&model.path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
    drop(file);
    assert!(matches!(fx.cache.status(&entry), CacheStatus::Changed(_)));

    let mut progress = Recorder::default();
    let err = fx.cache.verify_with(&entry, &mut progress).unwrap_err();
    assert_eq!(progress.stages, [(Stage::Hash, Some(200_000))]);
    let aside = fx.cache.dir().join("tiny.gguf.corrupt");
    match &err {
        SourceError::DigestMismatch {
            expected,
            actual,
            moved_to,
            ..
        } => {
            assert_eq!(*expected, sha256(&fx.data));
            assert_eq!(*actual, sha256(&corrupt));
            assert_eq!(moved_to.as_deref(), Some(aside.as_path()));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("moved aside to"), "{err}");
    // Not used: gone from its place, no sidecar; the next check says "not cached".
    assert_eq!(listing(fx.cache.dir()), ["tiny.gguf.corrupt"]);
    assert_eq!(fs::read(&aside).unwrap(), corrupt);
    assert!(matches!(
        fx.cache.verify(&entry),
        Err(SourceError::NotCached { .. })
    ));
    assert_eq!(fx.cache.status(&entry), CacheStatus::Missing);

    // A pull restores it.
    let pulled = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    assert!(pulled.fetched);
    assert_eq!(fs::read(&pulled.model.path).unwrap(), fx.data);
}

#[test]
fn touched_file_is_rehashed_once() {
    let fx = fixture(50_000);
    let entry = fx.entry();
    let model = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap()
        .model;
    let file = fs::File::options().write(true).open(&model.path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    assert!(matches!(fx.cache.status(&entry), CacheStatus::Changed(_)));

    let mut progress = Recorder::default();
    let verified = fx.cache.verify_with(&entry, &mut progress).unwrap();
    assert_eq!(progress.stages, [(Stage::Hash, Some(50_000))]);
    assert_ne!(verified.sidecar.mtime_ns, model.sidecar.mtime_ns);
    assert_eq!(verified.sidecar.sha256, model.sidecar.sha256);
    // Recorded: the next check does not hash.
    let mut progress = Recorder::default();
    fx.cache.verify_with(&entry, &mut progress).unwrap();
    assert!(progress.stages.is_empty());
    assert!(matches!(fx.cache.status(&entry), CacheStatus::Ready(_)));
}

#[test]
fn a_new_pin_rejects_the_cached_file() {
    let fx = fixture(10_000);
    let mut entry = fx.entry();
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    entry.sha256 = Some(sha256(b"another release"));
    assert!(matches!(
        fx.cache.status(&entry),
        CacheStatus::DigestMismatch(_)
    ));
    let err = fx.cache.verify(&entry).unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::DigestMismatch {
                moved_to: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(listing(fx.cache.dir()), ["tiny.gguf.corrupt"]);
}

#[test]
fn another_source_under_the_same_name_is_not_cached() {
    let fx = fixture(1000);
    let entry = fx.entry();
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    let other = ModelEntry::new("tiny", "/other/tiny.gguf".parse().unwrap());
    assert!(matches!(
        fx.cache.status(&other),
        CacheStatus::OtherSource(_)
    ));
    let err = fx.cache.verify(&other).unwrap_err();
    assert!(err.to_string().contains("came from"), "{err}");
}

/// Yields `good` bytes of data, then fails like a dropped connection.
struct FailingReader {
    data: Vec<u8>,
    pos: usize,
    good: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.good {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            ));
        }
        let n = buf.len().min(self.good - self.pos).min(64 * 1024);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn interrupted_write_leaves_no_valid_looking_file() {
    let fx = fixture(4 << 20);
    let entry = fx.entry();
    let mut reader = FailingReader {
        data: fx.data.clone(),
        pos: 0,
        good: 3 << 20,
    };
    let mut progress = Recorder::default();
    let err = fx
        .cache
        .store(&entry, &mut reader, &mut progress)
        .unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(progress.bytes, 3 << 20);
    // Nothing at all: no partial, no model file, no sidecar.
    assert_eq!(listing(fx.cache.dir()), Vec::<String>::new());
    assert_eq!(fx.cache.status(&entry), CacheStatus::Missing);

    // With a good copy cached, an interrupted re-pull leaves it intact and valid.
    let good = fx
        .cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap()
        .model;
    let mut reader = FailingReader {
        data: bytes(4 << 20, 99),
        pos: 0,
        good: 1 << 20,
    };
    fx.cache.store(&entry, &mut reader, &mut ()).unwrap_err();
    assert_eq!(listing(fx.cache.dir()), ["tiny.gguf", "tiny.json"]);
    assert_eq!(fx.cache.verify(&entry).unwrap(), good);
}

#[test]
fn leftovers_of_a_killed_pull_are_not_cached_and_get_cleaned() {
    let fx = fixture(5000);
    let entry = fx.entry();
    let dir = fx.cache.dir();
    fs::create_dir_all(dir).unwrap();
    // What a process killed mid-pull can leave: a partial temp file, and (killed between the
    // rename and the sidecar) a model file without a sidecar.
    let partial = dir.join(".tiny.aB3dE9.partial");
    fs::write(&partial, &fx.data[..1000]).unwrap();
    fs::write(dir.join("tiny.gguf"), &fx.data).unwrap();
    assert_eq!(fx.cache.status(&entry), CacheStatus::Missing);
    assert!(matches!(
        fx.cache.verify(&entry),
        Err(SourceError::NotCached { .. })
    ));
    assert!(fx.cache.list().unwrap().is_empty());

    // A recent partial may belong to a pull in progress: kept. An old one is removed.
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    assert!(partial.exists());
    fx.cache.remove("tiny").unwrap();
    let file = fs::File::options().write(true).open(&partial).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    drop(file);
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    assert_eq!(listing(dir), ["tiny.gguf", "tiny.json"]);
}

#[test]
fn unreadable_sidecar_is_not_cached() {
    let fx = fixture(100);
    let entry = fx.entry();
    fx.cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap();
    fs::write(fx.cache.dir().join("tiny.json"), "{ truncated").unwrap();
    assert!(matches!(fx.cache.status(&entry), CacheStatus::Invalid(_)));
    let err = fx.cache.verify(&entry).unwrap_err();
    assert!(err.to_string().contains("invalid sidecar"), "{err}");
    // A pull repairs it.
    assert!(
        fx.cache
            .pull(&entry, &PullOptions::default(), &mut ())
            .unwrap()
            .fetched
    );
    fx.cache.verify(&entry).unwrap();
}

#[test]
fn a_local_directory_cannot_be_pulled() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    crate::embed::testing::TinyBert::default()
        .write_dir(&model)
        .unwrap();
    let entry = ModelEntry::new("dir", ModelSource::Local(model));
    assert_eq!(entry.kind, crate::ModelKind::Embedding);
    let cache = ModelCache::new(tmp.path().join("cache"));
    let err = cache
        .pull(&entry, &PullOptions::default(), &mut ())
        .unwrap_err();
    assert!(err.to_string().contains("zip it"), "{err}");
}
