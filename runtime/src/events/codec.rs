//! HTTP ↔ CloudEvents: a body (read within its bounds by the server) in one of the three
//! content modes of the HTTP binding, and a reply written in binary mode (what a Knative
//! Broker expects).
//!
//! - **binary**: `ce-*` headers carry the attributes, the body is the data;
//! - **structured**: `Content-Type: application/cloudevents+json`, the body is the event in the
//!   JSON format;
//! - **batched**: `Content-Type: application/cloudevents-batch+json`, a JSON array of events.
//!
//! The required attributes are checked here first, so a malformed event is refused with a
//! message that names the attribute (the SDK's own errors do not always).

use std::cell::RefCell;
use std::rc::Rc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use cloudevents::binding::http::{Builder, Serializer, to_event};
use cloudevents::message::BinaryDeserializer;
use cloudevents::{AttributesReader, Event};

/// The media type of the JSON event format.
pub(crate) const STRUCTURED: &str = "application/cloudevents+json";
/// The media type of a batch in the JSON event format.
pub(crate) const BATCH: &str = "application/cloudevents-batch+json";
/// Events up to this size are always accepted (Knative's data-plane contract).
pub const MIN_EVENT_LIMIT: usize = 64 * 1024;

/// Why an HTTP request is not an event we take; each maps to a 4xx (never retried).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    /// The request is not a well-formed CloudEvent.
    #[error("not a valid CloudEvent: {0}")]
    Malformed(String),
    /// An event format other than JSON.
    #[error("unsupported event format {0:?}: send binary mode, {STRUCTURED} or {BATCH}")]
    UnsupportedFormat(String),
}

impl CodecError {
    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            CodecError::Malformed(_) => StatusCode::BAD_REQUEST,
            CodecError::UnsupportedFormat(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }
}

/// What one request carried.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Binary or structured mode (which one: [`Incoming::mode`]).
    One(Box<Event>, &'static str),
    /// Batched mode (possibly empty).
    Batch(Vec<Event>),
}

/// Parses a request in any of the three modes.
pub(crate) fn parse(headers: &HeaderMap, body: bytes::Bytes) -> Result<Incoming, CodecError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if essence == BATCH {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(&body).map_err(|e| {
                CodecError::Malformed(format!("the batch is not a JSON array of events: {e}"))
            })?;
        let events = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                one_structured(item.get().as_bytes())
                    .map_err(|e| CodecError::Malformed(format!("batch[{i}]: {e}")))
            })
            .collect::<Result<_, _>>()?;
        return Ok(Incoming::Batch(events));
    }
    if essence == STRUCTURED {
        return one_structured(&body)
            .map(|e| Incoming::One(Box::new(e), "structured"))
            .map_err(CodecError::Malformed);
    }
    if essence.starts_with("application/cloudevents") {
        return Err(CodecError::UnsupportedFormat(essence.to_string()));
    }
    binary(headers, body).map(|e| Incoming::One(Box::new(e), "binary"))
}

impl Incoming {
    /// The content mode, as the metrics name it.
    pub(crate) fn mode(&self) -> &'static str {
        match self {
            Incoming::One(_, mode) => mode,
            Incoming::Batch(_) => "batch",
        }
    }
}

fn binary(headers: &HeaderMap, body: bytes::Bytes) -> Result<Event, CodecError> {
    let Some(version) = headers.get("ce-specversion") else {
        return Err(CodecError::Malformed(format!(
            "no ce-specversion header: send binary mode (ce-specversion, ce-id, ce-source, \
             ce-type headers) or Content-Type {STRUCTURED}"
        )));
    };
    check_version(version.to_str().unwrap_or("(not text)"))?;
    for name in ["id", "source", "type"] {
        let present = headers
            .get(format!("ce-{name}"))
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.is_empty());
        if !present {
            return Err(CodecError::Malformed(format!(
                "the required attribute {name} is missing (header ce-{name})"
            )));
        }
    }
    to_event(headers, body.to_vec()).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// One event in the JSON format: in one pass when it is a complete 1.0 event; anything else
/// goes the long way, for a message naming the problem.
fn one_structured(json: &[u8]) -> Result<Event, String> {
    if let Some(event) = super::json_format::read(json) {
        return Ok(event);
    }
    let item: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the body is not JSON: {e}"))?;
    structured(item)
}

/// One event in the JSON format, its required attributes checked by name first.
fn structured(item: serde_json::Value) -> Result<Event, String> {
    let serde_json::Value::Object(map) = &item else {
        return Err("an event in the JSON format is a JSON object".into());
    };
    match map.get("specversion") {
        None => return Err("the required attribute specversion is missing".into()),
        Some(serde_json::Value::String(v)) => {
            check_version(v).map_err(|e| e.to_string())?;
        }
        Some(other) => {
            return Err(format!(
                "specversion must be the string \"1.0\", not {other}"
            ));
        }
    }
    for name in ["id", "source", "type"] {
        match map.get(name) {
            Some(serde_json::Value::String(v)) if !v.is_empty() => {}
            Some(serde_json::Value::String(_)) => {
                return Err(format!("the required attribute {name} is empty"));
            }
            Some(other) => {
                return Err(format!(
                    "the attribute {name} must be a string, not {other}"
                ));
            }
            None => return Err(format!("the required attribute {name} is missing")),
        }
    }
    serde_json::from_value(item).map_err(|e| e.to_string())
}

fn check_version(version: &str) -> Result<(), CodecError> {
    if version == "1.0" {
        Ok(())
    } else {
        Err(CodecError::Malformed(format!(
            "specversion {version:?} is not supported (this runtime takes 1.0)"
        )))
    }
}

/// A 200 response carrying `event` in binary mode.
pub(crate) fn binary_response(event: Event) -> Result<axum::response::Response, String> {
    let (headers, body) = to_binary(event)?;
    let mut response = axum::response::Response::new(Body::from(body));
    *response.headers_mut() = headers;
    Ok(response)
}

/// A 200 response carrying `events` as a batch (the JSON format).
pub(crate) fn batch_response(events: &[Event]) -> Result<axum::response::Response, String> {
    let body = serde_json::to_vec(events).map_err(|e| e.to_string())?;
    let mut response = axum::response::Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(BATCH));
    Ok(response)
}

/// The headers and body of `event` in binary mode (for replies and for `emit`).
pub(crate) fn to_binary(event: Event) -> Result<(HeaderMap, Vec<u8>), String> {
    let out = Rc::new(RefCell::new(HeaderMap::new()));
    let body = event
        .deserialize_binary(Serializer::new(Collect(out.clone())))
        .map_err(|e| format!("the event cannot be written in binary mode: {e}"))?;
    let headers = out.take();
    Ok((headers, body))
}

/// The SDK's binary serializer writes headers here and hands back the body.
struct Collect(Rc<RefCell<HeaderMap>>);

impl Builder<Vec<u8>> for Collect {
    fn header(&mut self, key: &str, value: HeaderValue) {
        if let Ok(name) = axum::http::HeaderName::try_from(key) {
            self.0.borrow_mut().insert(name, value);
        }
    }

    fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<Vec<u8>> {
        Ok(bytes)
    }

    fn finish(&mut self) -> cloudevents::message::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// The event's id and source, for logs.
pub(crate) fn describe(event: &Event) -> String {
    format!("{} from {}", event.id(), event.source())
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    axum::http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    fn err(h: &[(&'static str, &'static str)], body: &'static str) -> String {
        parse(&headers(h), bytes::Bytes::from_static(body.as_bytes()))
            .unwrap_err()
            .to_string()
    }

    const BINARY: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];

    #[test]
    fn binary_mode() {
        let mut h = BINARY.to_vec();
        h.push(("content-type", "application/json"));
        h.push(("ce-comexampleextension1", "value"));
        let Incoming::One(e, "binary") =
            parse(&headers(&h), bytes::Bytes::from_static(b"{\"a\":1}")).unwrap()
        else {
            panic!("one event")
        };
        assert_eq!((e.id(), e.ty()), ("1", "t"));
        assert_eq!(e.datacontenttype(), Some("application/json"));
        for missing in ["ce-id", "ce-source", "ce-type"] {
            let h: Vec<_> = BINARY
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let msg = err(&h, "");
            assert!(msg.contains(&format!("header {missing}")), "{msg}");
        }
        assert!(err(&BINARY[1..], "").contains("no ce-specversion"));
        let mut h = BINARY.to_vec();
        h[0] = ("ce-specversion", "0.1");
        assert!(err(&h, "").contains("\"0.1\" is not supported"));
    }

    #[test]
    fn structured_and_batched_modes() {
        let ct = [(
            "content-type",
            "application/cloudevents+json; charset=utf-8",
        )];
        let ok = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}"#;
        assert!(matches!(
            parse(&headers(&ct), bytes::Bytes::from_static(ok.as_bytes())).unwrap(),
            Incoming::One(_, "structured")
        ));
        for (body, needle) in [
            (
                r#"{"id":"1","source":"/s","type":"t"}"#,
                "specversion is missing",
            ),
            (
                r#"{"specversion":"0.2","id":"1","source":"/s","type":"t"}"#,
                "not supported",
            ),
            (
                r#"{"specversion":"1.0","source":"/s","type":"t"}"#,
                "id is missing",
            ),
            (
                r#"{"specversion":"1.0","id":"1","type":"t"}"#,
                "source is missing",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"/s","type":""}"#,
                "type is empty",
            ),
            (r#"{"specversion":"1.0","id":"1","#, "not JSON"),
        ] {
            let msg = err(&ct, body);
            assert!(msg.contains(needle), "{body}: {msg}");
        }
        let batch = [("content-type", BATCH)];
        let body = format!("[{ok},{ok}]");
        let Incoming::Batch(events) = parse(&headers(&batch), bytes::Bytes::from(body)).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(events.len(), 2);
        let msg = err(&batch, r#"[{"specversion":"1.0"}]"#);
        assert!(msg.contains("batch[0]: the required attribute id"), "{msg}");
        let msg = err(&[("content-type", "application/cloudevents+xml")], "<e/>");
        assert!(msg.contains("unsupported event format"), "{msg}");
    }

    #[test]
    fn a_reply_is_written_in_binary_mode() {
        let event = super::super::convert::from_wit(crate::wit::slmfn::agent::types::Cloudevent {
            id: "r".into(),
            source: "/s".into(),
            type_: "t.reply".into(),
            specversion: "1.0".into(),
            datacontenttype: Some("text/plain".into()),
            dataschema: None,
            subject: None,
            time: None,
            extensions: vec![("traceid".into(), "abc".into())],
            data: Some(b"hello".to_vec()),
        })
        .unwrap();
        let (h, body) = to_binary(event).unwrap();
        assert_eq!(h["ce-id"], "r");
        assert_eq!(h["ce-type"], "t.reply");
        assert_eq!(h["ce-traceid"], "abc");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(body, b"hello");
    }
}
