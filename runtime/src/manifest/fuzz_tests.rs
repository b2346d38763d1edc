//! Property tests of the manifest parser with hostile input: whatever the text, parsing
//! answers a [`ManifestError`] or a valid manifest, never panics; and a manifest it accepts
//! survives the registry's JSON round trip unchanged (a record that did not would be
//! quarantined at the next start).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// Scalars of every TOML type, with values at and past the edges the limits check.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(290_000),
            Just(290_001),
            Just(4097)
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("TOML has finite floats", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("agent"),
            Just("tool"),
            Just("hello"),
            Just("a-b"),
            Just("*"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ]
}

/// Any TOML-shaped value: scalars, arrays and tables of known and unknown keys.
fn value() -> impl Strategy<Value = Value> {
    let keys = prop_oneof![
        Just("name"),
        Just("kind"),
        Just("limits"),
        Just("timeout_ms"),
        Just("memory_mb"),
        Just("max_concurrency"),
        Just("kv_max_keys"),
        Just("kv_max_bytes"),
        Just("env"),
        Just("models"),
        Just("allowed"),
        Just("default"),
        Just("max_tokens"),
        Just("tools"),
        Just("input"),
        Just("schema"),
        Just("type"),
        Just("triggers"),
        Just("filter"),
        Just("attributes"),
        Just("build"),
        Just("component"),
        Just("description"),
        Just("unknown"),
    ]
    .prop_map(str::to_string);
    scalar().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A manifest table: mostly the real sections, with values of any shape.
fn manifest_table() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("hello")), scalar()],
        prop::collection::btree_map(
            prop_oneof![
                Just("kind"),
                Just("limits"),
                Just("env"),
                Just("models"),
                Just("tools"),
                Just("input"),
                Just("triggers"),
                Just("build"),
                Just("description"),
                Just("junk"),
            ]
            .prop_map(str::to_string),
            value(),
            0..6,
        ),
    )
        .prop_map(|(name, rest)| {
            let mut table: Map<String, Value> = rest.into_iter().collect();
            table.insert("name".into(), name);
            Value::Object(table)
        })
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match Manifest::parse(text) {
        Err(e) => prop_assert!(!e.to_string().is_empty()),
        Ok(m) => {
            prop_assert!(m.validate().is_ok());
            let stored = serde_json::to_vec(&m).expect("a manifest serializes");
            let back: Manifest = serde_json::from_slice(&stored)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(back, m);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Structured input: tables of the manifest's keys with values of any type.
    #[test]
    fn structured_manifests_parse_or_fail_cleanly(table in manifest_table()) {
        // TOML cannot say every JSON value (nulls); those are not manifests anyone can write.
        if let Ok(text) = toml::to_string(&table) {
            check(&text)?;
        }
    }

    /// Byte-level damage to a real manifest: cut, spliced, duplicated.
    #[test]
    fn damaged_manifests_parse_or_fail_cleanly(
        cut in 0usize..400,
        splice in "\\PC{0,8}",
        at in 0usize..400,
    ) {
        let good = "name = \"hello\"\n[limits]\ntimeout_ms = 1000\nkv_max_keys = 5\n\
                    [env]\nA = \"b\"\n[models]\nallowed = [\"smollm2\"]\n\
                    [[triggers]]\nfilter = { attributes = { type = \"a.b\" } }\n";
        let mut text: String = good.chars().take(cut).collect();
        let at = at.min(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &splice);
        check(&text)?;
        check(&format!("{good}{good}"))?;
    }

    /// Any text at all.
    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,200}") {
        check(&text)?;
    }
}
