//! The HTTP request a function receives and the response it answers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::wit::slmfn::agent::types;

/// One HTTP header: name and raw value bytes.
pub type Header = (String, Vec<u8>);

/// An HTTP invocation of a function (`{METHOD} /fn/{name}{path}?{query}`).
///
/// The fields are public; the methods are shortcuts for common reads. [`Request::new`] and
/// the `with_*` methods build one, for unit tests of a handler on the host.
///
/// # Examples
///
/// ```
/// use slmfn_sdk::Request;
///
/// let req = Request::new("POST", "/greet")
///     .with_query("lang=en&name=Ada%20L.")
///     .with_header("Content-Type", "application/json")
///     .with_body(r#"{"name": "Ada"}"#);
///
/// assert_eq!(req.query_param("name").as_deref(), Some("Ada L."));
/// assert_eq!(req.header("content-type"), Some("application/json"));
/// assert_eq!(req.text().unwrap(), r#"{"name": "Ada"}"#);
/// let body: serde_json::Value = req.json().unwrap();
/// assert_eq!(body["name"], "Ada");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// The path after `/fn/{name}`, always starting with `/` (`/` when empty).
    pub path: String,
    /// The raw query string without the leading `?` (empty when absent).
    pub query: String,
    /// Request headers as received, names in the client's case (hop-by-hop headers removed).
    pub headers: Vec<Header>,
    /// The request body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with this method and path, no query, headers or body.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            ..Self::default()
        }
    }

    /// Replaces the raw query string (without the leading `?`).
    pub fn with_query(mut self, query: impl Into<String>) -> Self {
        self.query = query.into();
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Decodes the body as JSON; a malformed body is an [`Error::BadRequest`] (HTTP 400).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::BadRequest(format!("request body is not the expected JSON: {e}")))
    }

    /// The body as UTF-8 text; a body that is not UTF-8 is an [`Error::BadRequest`].
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::BadRequest(format!("request body is not UTF-8: {e}")))
    }

    /// The first value of a header, by case-insensitive name; `None` when absent or not UTF-8
    /// (read [`Request::headers`] for raw bytes and repeated headers).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The first value of a query parameter, percent-decoded (`+` is a space); `None` when
    /// absent. A parameter without `=` has the empty value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_params().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// All query parameters in order, percent-decoded.
    pub fn query_params(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
    }
}

/// Decodes `application/x-www-form-urlencoded` text; invalid escapes stay as they are and
/// invalid UTF-8 becomes U+FFFD, so a query never fails to decode.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl From<types::Request> for Request {
    fn from(r: types::Request) -> Self {
        Self {
            method: r.method,
            path: r.path,
            query: r.query,
            headers: r.headers,
            body: r.body,
        }
    }
}

/// What a function answers: status, headers and body.
///
/// # Examples
///
/// ```
/// use slmfn_sdk::Response;
///
/// let ok = Response::json(&serde_json::json!({"ok": true})).unwrap();
/// assert_eq!(ok.status, 200);
/// assert_eq!(ok.body, br#"{"ok":true}"#);
///
/// let created = Response::text("made it").with_status(201).with_header("Location", "/things/1");
/// assert_eq!(created.header("location"), Some("/things/1"));
///
/// let teapot = Response::new(418, "short and stout");
/// assert!(teapot.headers.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code (100..=599).
    pub status: u16,
    /// Response headers.
    pub headers: Vec<Header>,
    /// The response body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status and body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// 200 with `value` as JSON and `Content-Type: application/json`.
    ///
    /// Fails (as [`Error::Internal`]) only when `value` cannot be represented as JSON, such as
    /// a map with non-string keys.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        Ok(Self::new(200, serde_json::to_vec(value)?)
            .with_header("content-type", "application/json"))
    }

    /// 200 with `text` and `Content-Type: text/plain; charset=utf-8`.
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(200, text.into()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// Replaces the status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header (repeated names are sent as repeated headers).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The first value of a header, by case-insensitive name; `None` when absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

impl From<Response> for types::Response {
    fn from(r: Response) -> Self {
        Self {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a+b%20c"), "a b c");
        assert_eq!(percent_decode("%E2%9C%93"), "\u{2713}");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn query_params() {
        let req = Request::new("GET", "/").with_query("a=1&flag&&b=x%3Dy&a=2");
        let all: Vec<_> = req.query_params().collect();
        assert_eq!(
            all,
            [
                ("a".into(), "1".into()),
                ("flag".into(), "".into()),
                ("b".into(), "x=y".into()),
                ("a".into(), "2".into()),
            ]
        );
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn json_errors_are_bad_requests() {
        let req = Request::new("POST", "/").with_body("{not json");
        let err = req.json::<serde_json::Value>().unwrap_err();
        assert_eq!(err.status(), 400);
        let binary = Request::new("POST", "/").with_body(vec![0xff, 0xfe]);
        assert_eq!(binary.text().unwrap_err().status(), 400);
    }
}
