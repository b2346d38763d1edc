//! The SDK's [`Event`] ↔ the WIT `cloudevent` record, and what trigger filters read.
//!
//! Toward the guest every attribute becomes a string (`time` in RFC 3339 with `Z`) and the data
//! its bytes (JSON data as its compact text; without a `datacontenttype`, JSON data of the JSON
//! format gets `application/json`, as that format specifies). From the guest, an event is checked the way the
//! spec requires before it leaves the runtime: `specversion` 1.0, non-empty `id`, `source` and
//! `type`, an RFC 3339 `time`, an absolute `dataschema` URI, extension names of lowercase
//! letters and digits that are not context attributes.

use std::borrow::Cow;

use chrono::SecondsFormat;
use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, AttributesWriter, Event, EventBuilder, EventBuilderV10};

use super::trigger::Attributes;
use crate::wit::slmfn::agent::types::Cloudevent;

/// The context attributes of CloudEvents 1.0 (extensions may not take these names).
const CONTEXT_ATTRIBUTES: [&str; 8] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// The guest's view of an event.
pub(crate) fn to_wit(event: &Event) -> Cloudevent {
    let mut extensions: Vec<(String, String)> = event
        .iter_extensions()
        .map(|(k, v)| (k.to_string(), extension_text(v)))
        .collect();
    extensions.sort();
    Cloudevent {
        id: event.id().to_string(),
        source: event.source().to_string(),
        type_: event.ty().to_string(),
        specversion: event.specversion().to_string(),
        // The JSON format: JSON data without a datacontenttype is application/json.
        datacontenttype: match (event.datacontenttype(), event.data()) {
            (Some(ct), _) => Some(ct.to_string()),
            (None, Some(Data::Json(_))) => Some("application/json".to_string()),
            (None, _) => None,
        },
        dataschema: event.dataschema().map(|u| u.to_string()),
        subject: event.subject().map(str::to_string),
        time: event
            .time()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        extensions,
        data: event.data().map(data_bytes),
    }
}

/// An event from a guest (a reply or an emit), checked; the error names what is wrong.
pub(crate) fn from_wit(ce: Cloudevent) -> Result<Event, String> {
    if ce.specversion != "1.0" {
        return Err(format!(
            "specversion {:?} is not supported (use 1.0)",
            ce.specversion
        ));
    }
    for (name, value) in [("id", &ce.id), ("source", &ce.source), ("type", &ce.type_)] {
        if value.is_empty() {
            return Err(format!("the required attribute {name} is empty"));
        }
    }
    let mut builder = EventBuilderV10::new()
        .id(ce.id)
        .source(ce.source)
        .ty(ce.type_);
    if let Some(subject) = ce.subject {
        builder = builder.subject(subject);
    }
    if let Some(time) = ce.time {
        builder = builder.time(time);
    }
    for (name, value) in &ce.extensions {
        check_extension_name(name)?;
        builder = builder.extension(name, value.as_str());
    }
    let mut event = builder.build().map_err(|e| e.to_string())?;
    if let Some(schema) = ce.dataschema {
        let url = url::Url::parse(&schema)
            .map_err(|e| format!("dataschema {schema:?} is not an absolute URI: {e}"))?;
        event.set_dataschema(Some(url));
    }
    match (ce.datacontenttype, ce.data) {
        (Some(ct), Some(data)) => {
            let data = typed_data(&ct, data);
            event.set_data(ct, data);
        }
        (Some(ct), None) => {
            event.set_datacontenttype(Some(ct));
        }
        (None, Some(data)) => {
            event.set_data_unchecked(data);
        }
        (None, None) => {}
    }
    Ok(event)
}

/// Extension names: lowercase letters and digits (the spec's rule, and what fits an HTTP
/// header `ce-<name>`), not a context attribute.
pub fn check_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "extension name {name:?} must be lowercase letters and digits"
        ));
    }
    if CONTEXT_ATTRIBUTES.contains(&name) {
        return Err(format!(
            "extension name {name:?} is a context attribute; set the attribute itself"
        ));
    }
    Ok(())
}

/// The data as the SDK types it for its content type, so the JSON format writes JSON data as
/// JSON and text as a string (binary otherwise, as `data_base64`).
pub(crate) fn typed_data(content_type: &str, bytes: Vec<u8>) -> Data {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json =
        essence == "application/json" || essence == "text/json" || essence.ends_with("+json");
    if json {
        if let Ok(v) = serde_json::from_slice(&bytes) {
            return Data::Json(v);
        }
    } else if essence.starts_with("text/") || essence.ends_with("+xml") || essence.ends_with("/xml")
    {
        return match String::from_utf8(bytes) {
            Ok(s) => Data::String(s),
            Err(e) => Data::Binary(e.into_bytes()),
        };
    }
    Data::Binary(bytes)
}

fn data_bytes(data: &Data) -> Vec<u8> {
    match data {
        Data::Binary(b) => b.clone(),
        Data::String(s) => s.as_bytes().to_vec(),
        Data::Json(v) => serde_json::to_vec(v).unwrap_or_default(),
    }
}

fn extension_text(v: &ExtensionValue) -> String {
    match v {
        ExtensionValue::String(s) => s.clone(),
        ExtensionValue::Boolean(b) => b.to_string(),
        ExtensionValue::Integer(i) => i.to_string(),
    }
}

/// What trigger filters read: context attributes by name, then extensions.
impl Attributes for Event {
    fn attribute(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "id" => Some(self.id().into()),
            "source" => Some(self.source().as_str().into()),
            "type" => Some(self.ty().into()),
            "specversion" => Some(self.specversion().to_string().into()),
            "datacontenttype" => self.datacontenttype().map(Into::into),
            "dataschema" => self.dataschema().map(|u| u.as_str().into()),
            "subject" => self.subject().map(Into::into),
            "time" => self
                .time()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into()),
            _ => self.extension(name).map(|v| match v {
                ExtensionValue::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(extension_text(other)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit(id: &str) -> Cloudevent {
        Cloudevent {
            id: id.into(),
            source: "/tests".into(),
            type_: "com.example.test".into(),
            specversion: "1.0".into(),
            datacontenttype: Some("application/json".into()),
            dataschema: Some("https://example.com/schema.json".into()),
            subject: Some("s".into()),
            time: Some("2018-04-05T03:56:24Z".into()),
            extensions: vec![("comexampleextension1".into(), "value".into())],
            data: Some(br#"{"world":"hello"}"#.to_vec()),
        }
    }

    #[test]
    fn a_guest_event_round_trips() {
        let event = from_wit(wit("1")).unwrap();
        assert!(matches!(event.data(), Some(Data::Json(_))));
        assert_eq!(format!("{:?}", to_wit(&event)), format!("{:?}", wit("1")));
        assert_eq!(
            event.attribute("comexampleextension1").as_deref(),
            Some("value")
        );
        assert_eq!(
            event.attribute("time").as_deref(),
            Some("2018-04-05T03:56:24Z")
        );
    }

    #[test]
    fn bad_guest_events_are_named() {
        type Mutate = fn(&mut Cloudevent);
        let cases: [(Mutate, &str); 6] = [
            (|e| e.specversion = "0.3".into(), "specversion"),
            (|e| e.id.clear(), "attribute id"),
            (|e| e.type_.clear(), "attribute type"),
            (|e| e.time = Some("yesterday".into()), "time"),
            (|e| e.dataschema = Some("not a uri".into()), "dataschema"),
            (
                |e| e.extensions = vec![("Bad-Name".into(), "x".into())],
                "extension name",
            ),
        ];
        for (mutate, needle) in cases {
            let mut e = wit("1");
            mutate(&mut e);
            let err = from_wit(e).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn data_is_typed_by_its_content_type() {
        assert!(matches!(
            typed_data("application/json; charset=utf-8", b"[1]".to_vec()),
            Data::Json(_)
        ));
        assert!(matches!(
            typed_data("application/json", b"not json".to_vec()),
            Data::Binary(_)
        ));
        assert!(matches!(
            typed_data("text/plain", b"hi".to_vec()),
            Data::String(_)
        ));
        assert!(matches!(
            typed_data("application/octet-stream", vec![0, 159]),
            Data::Binary(_)
        ));
    }
}
