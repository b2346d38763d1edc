//! The JSON event format read in one pass: the body's attributes straight into an SDK
//! [`Event`], its `data` parsed once.
//!
//! The SDK's own `Deserialize for Event` builds the whole body as a `serde_json::Value`, copies
//! it into a map, and rebuilds each attribute and the data from that map: three trees for one
//! event. This reader makes the same event (the tests compare the two) and refuses what the
//! SDK refuses; a refusal here is only a `None`, and the caller takes the checking path, which
//! names the problem.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesWriter, Event, EventBuilder, EventBuilderV10};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A complete CloudEvents 1.0 event (non-empty `id`, `source` and `type`) in the JSON format,
/// or `None` when the body is anything else.
pub(super) fn read(body: &[u8]) -> Option<Event> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let wire = (&mut de).deserialize_map(WireVisitor).ok()?;
    de.end().ok()?;
    wire.into_event()
}

/// The members of one event object as they came, borrowed from the body where they can be.
#[derive(Default)]
struct Wire<'a> {
    specversion: Option<Text<'a>>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<Text<'a>>,
    subject: Option<String>,
    time: Option<Text<'a>>,
    data: Option<&'a RawValue>,
    data_base64: Option<&'a RawValue>,
    extensions: Vec<(String, ExtensionValue)>,
}

impl Wire<'_> {
    fn into_event(self) -> Option<Event> {
        if self.specversion.as_ref().map(|v| v.0.as_ref()) != Some("1.0") {
            return None;
        }
        let (id, source, ty) = (self.id?, self.source?, self.ty?);
        if id.is_empty() || source.is_empty() || ty.is_empty() {
            return None;
        }
        let data = data(
            self.datacontenttype
                .as_deref()
                .unwrap_or("application/json"),
            self.data,
            self.data_base64,
        )?;
        let mut event = EventBuilderV10::new()
            .id(id)
            .source(source)
            .ty(ty)
            .build()
            .ok()?;
        event.set_datacontenttype(self.datacontenttype);
        if let Some(schema) = self.dataschema {
            event.set_dataschema(Some(url::Url::parse(&schema.0).ok()?));
        }
        event.set_subject(self.subject);
        if let Some(time) = self.time {
            let time = DateTime::parse_from_rfc3339(&time.0).ok()?;
            event.set_time(Some(DateTime::<Utc>::from(time)));
        }
        if let Some(data) = data {
            event.set_data_unchecked(data);
        }
        for (name, value) in self.extensions {
            event.set_extension(&name, value);
        }
        Some(event)
    }
}

/// `data` or `data_base64` as the SDK reads them for this content type.
fn data(
    content_type: &str,
    data: Option<&RawValue>,
    data_base64: Option<&RawValue>,
) -> Option<Option<Data>> {
    let json = is_json_content_type(content_type);
    Some(match (data, data_base64) {
        (Some(_), Some(_)) => return None,
        (None, None) => None,
        (Some(d), None) if json => Some(Data::Json(serde_json::from_str(d.get()).ok()?)),
        (Some(d), None) => Some(Data::String(serde_json::from_str(d.get()).ok()?)),
        (None, Some(d)) => {
            let text: Text<'_> = serde_json::from_str(d.get()).ok()?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.0.as_bytes())
                .ok()?;
            match json.then(|| serde_json::from_slice(&bytes).ok()).flatten() {
                Some(value) => Some(Data::Json(value)),
                None => Some(Data::Binary(bytes)),
            }
        }
    })
}

/// The SDK's rule for JSON data (its own function is private).
fn is_json_content_type(ct: &str) -> bool {
    ct.starts_with("application/json") || ct.starts_with("text/json") || ct.ends_with("+json")
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event in the JSON format")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Wire<'de>, A::Error> {
        let mut wire = Wire::default();
        // A member given twice counts once, the last one (as a `serde_json::Map` keeps it).
        while let Some(Text(key)) = map.next_key()? {
            match key.as_ref() {
                "specversion" => wire.specversion = map.next_value()?,
                "id" => wire.id = map.next_value()?,
                "source" => wire.source = map.next_value()?,
                "type" => wire.ty = map.next_value()?,
                "datacontenttype" => wire.datacontenttype = map.next_value()?,
                "dataschema" => wire.dataschema = map.next_value()?,
                "subject" => wire.subject = map.next_value()?,
                "time" => wire.time = map.next_value()?,
                "data" => wire.data = Some(map.next_value()?),
                "data_base64" => wire.data_base64 = Some(map.next_value()?),
                _ => {
                    wire.extensions.retain(|(name, _)| name != key.as_ref());
                    if let Some(value) = map.next_value::<Option<ExtensionValue>>()? {
                        wire.extensions.push((key.into_owned(), value));
                    }
                }
            }
        }
        Ok(wire)
    }
}

/// A JSON string, borrowed from the body unless it holds escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the SDK makes of `body` (the reference this reader must agree with).
    fn sdk(body: &str) -> Option<Event> {
        let event: Event = serde_json::from_str(body).ok()?;
        Some(event)
    }

    #[test]
    fn reads_the_same_event_as_the_sdk() {
        let bodies = [
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"a":[1,2,{"b":null}]}}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"text"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":null}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi \u00e9\n"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/cloudevents+json","data_base64":"eyJhIjoxfQ=="}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAEC"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":"sub","time":"2020-01-02T03:04:05.678+01:00","dataschema":"https://example.com/s.json"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":null,"time":null}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":"v","num":42,"flag":true,"gone":null}"#,
            r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t","x":"a","x":"b"}"#,
            r#"{"specversion":"1.0","id":"\"q\"","source":"/s\u002f","type":"t","e\u0078t":"v"}"#,
            r#" { "specversion" : "1.0" , "id" : "1" , "source" : "/s" , "type" : "t" } "#,
        ];
        for body in bodies {
            let expected = sdk(body).unwrap_or_else(|| panic!("the SDK reads {body}"));
            assert_eq!(read(body.as_bytes()), Some(expected), "{body}");
        }
    }

    #[test]
    fn refuses_what_the_sdk_refuses_or_is_incomplete() {
        for body in [
            r#"{"specversion":"1.0","id":"1","source":"/s"}"#,
            r#"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"","source":"/s","type":"t"}"#,
            r#"{"specversion":1,"id":"1","source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"yesterday"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"not a url"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"a","data_base64":"AA=="}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{"a":1}}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"a":1}}"#,
            r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"} trailing"#,
            r#"[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]"#,
            r#"{"specversion":"1.0","id":"1","#,
            "",
        ] {
            assert_eq!(read(body.as_bytes()), None, "{body}");
        }
    }
}
