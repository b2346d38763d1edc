//! Property tests of the CloudEvents HTTP codec with hostile requests: any headers, content
//! type and body parse to events or to a [`CodecError`] (always a 4xx), never a panic; and an
//! event we accept can always be written back (a reply the runtime took but could not send
//! would be a 500 later, after the agent ran).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1.0".to_string()),
        Just("0.3".to_string()),
        Just(String::new()),
        Just("2026-12-03T10:00:00Z".to_string()),
        Just("not a time".to_string()),
        Just("https://example.com/x".to_string()),
        Just("application/json".to_string()),
        "[ -~]{0,16}",
    ]
}

fn ce_headers() -> impl Strategy<Value = HeaderMap> {
    let names = prop::sample::select(vec![
        "ce-specversion",
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-time",
        "ce-subject",
        "ce-dataschema",
        "ce-datacontenttype",
        "ce-ext1",
        "ce-Ünicode",
        "ce-",
        "content-type",
    ]);
    let content_type = prop_oneof![
        Just(None),
        Just(Some(STRUCTURED)),
        Just(Some(BATCH)),
        Just(Some("application/cloudevents+xml")),
        Just(Some("application/json; charset=utf-8")),
        Just(Some("text/plain")),
    ];
    (
        prop::collection::vec((names, header_value()), 0..8),
        content_type,
    )
        .prop_map(|(pairs, content_type)| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    headers.insert(n, v);
                }
            }
            if let Some(ct) = content_type {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            headers
        })
}

fn attribute() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("1.0")),
        Just(json!("0.3")),
        Just(json!("")),
        Just(json!(null)),
        Just(json!(7)),
        Just(json!({"a": 1})),
        Just(json!("2026-12-03T10:00:00Z")),
        Just(json!("aGVsbG8=")),
        Just(json!("%%%")),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

/// A JSON-format event with any subset of attributes of any type.
fn structured_event() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "subject",
        "dataschema",
        "datacontenttype",
        "data",
        "data_base64",
        "ext1",
        "Bad-Name",
        "",
    ]);
    prop::collection::btree_map(names, attribute(), 0..10).prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<Map<_, _>>(),
        )
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        structured_event().prop_map(|e| serde_json::to_vec(&e).unwrap()),
        prop::collection::vec(structured_event(), 0..3)
            .prop_map(|es| serde_json::to_vec(&es).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,64}".prop_map(String::into_bytes),
    ]
}

fn check(headers: &HeaderMap, body: Vec<u8>) -> Result<(), TestCaseError> {
    match parse(headers, bytes::Bytes::from(body)) {
        Err(e) => prop_assert!(e.status().is_client_error(), "{e}"),
        Ok(Incoming::One(event, _)) => {
            prop_assert!(!event.id().is_empty() && !event.ty().is_empty());
            if let Err(e) = binary_response(*event) {
                return Err(TestCaseError::fail(format!(
                    "accepted but not writable: {e}"
                )));
            }
        }
        Ok(Incoming::Batch(events)) => {
            for event in &events {
                prop_assert!(!event.id().is_empty() && !event.ty().is_empty());
            }
            if let Err(e) = batch_response(&events) {
                return Err(TestCaseError::fail(format!(
                    "accepted but not writable: {e}"
                )));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_is_an_event_or_a_client_error(headers in ce_headers(), body in body()) {
        check(&headers, body)?;
    }

    #[test]
    fn structured_events_of_any_attributes_parse_or_fail_cleanly(event in structured_event()) {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(STRUCTURED));
        check(&headers, serde_json::to_vec(&event).unwrap())?;
    }
}
