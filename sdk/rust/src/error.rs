//! The error a function answers with.
//!
//! Policy: the three variants are the WIT `error` and pick the HTTP status (400, 404, 500).
//! Failures of the runtime's services (kv, inference, tools, events) and of JSON encoding
//! convert to [`Error::Internal`]: the caller did nothing wrong when the function's own call
//! fails. Parsing the request is the exception: [`Request::json`](crate::Request::json)
//! answers [`Error::BadRequest`].

use std::fmt;

use crate::wit::slmfn::agent::{events, inference, kv, tools, types};

/// A `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a function could not answer; the runtime maps each variant to an HTTP status and
/// answers `{"error": "<message>"}`.
///
/// Every error of the SDK's modules converts into it, so `?` works in a handler.
///
/// # Examples
///
/// ```
/// use slmfn_sdk::{Error, Request, Response};
///
/// fn handle(req: Request) -> Result<Response, Error> {
///     let n: u32 = req
///         .query_param("n")
///         .ok_or_else(|| Error::bad_request("missing query parameter n"))?
///         .parse()
///         .map_err(|e| Error::bad_request(format!("n: {e}")))?;
///     Ok(Response::text((n * 2).to_string()))
/// }
///
/// let req = Request::new("GET", "/").with_query("n=21");
/// assert_eq!(handle(req).unwrap().body, b"42");
/// assert_eq!(handle(Request::new("GET", "/")).unwrap_err().status(), 400);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Error {
    /// The input was malformed (HTTP 400).
    BadRequest(String),
    /// The requested thing does not exist (HTTP 404).
    NotFound(String),
    /// Any other failure inside the function (HTTP 500).
    Internal(String),
    /// A capacity limit was hit (a model's queue is full): the client should retry after
    /// this many milliseconds (HTTP 429 with `Retry-After`).
    Overloaded(u32),
}

impl Error {
    /// An [`Error::BadRequest`] with this message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// An [`Error::NotFound`] with this message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// An [`Error::Internal`] with this message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// The HTTP status the runtime answers with: 400, 404, 500 or 429.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::Internal(_) => 500,
            Self::Overloaded(_) => 429,
        }
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::NotFound(m) | Self::Internal(m) => m,
            Self::Overloaded(_) => "overloaded, retry later",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::BadRequest(_) => "bad request",
            Self::NotFound(_) => "not found",
            Self::Internal(_) => "internal error",
            Self::Overloaded(_) => "overloaded",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for Error {}

impl From<Error> for types::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::BadRequest(m) => Self::BadRequest(m),
            Error::NotFound(m) => Self::NotFound(m),
            Error::Internal(m) => Self::Internal(m),
            Error::Overloaded(ms) => Self::Overloaded(ms),
        }
    }
}

impl From<types::Error> for Error {
    fn from(error: types::Error) -> Self {
        match error {
            types::Error::BadRequest(m) => Self::BadRequest(m),
            types::Error::NotFound(m) => Self::NotFound(m),
            types::Error::Internal(m) => Self::Internal(m),
            types::Error::Overloaded(ms) => Self::Overloaded(ms),
        }
    }
}

impl From<kv::Error> for Error {
    fn from(error: kv::Error) -> Self {
        let message = match error {
            kv::Error::TooLarge(m) => format!("kv: too large: {m}"),
            kv::Error::Io(m) => format!("kv: {m}"),
        };
        Self::Internal(message)
    }
}

impl From<inference::Error> for Error {
    fn from(error: inference::Error) -> Self {
        use inference::Error as E;
        let message = match error {
            E::ModelNotFound(m) => format!("inference: model not found: {m}"),
            E::Overloaded(ms) => return Self::Overloaded(ms),
            E::InvalidInput(m) => format!("inference: invalid input: {m}"),
            E::ContextLengthExceeded(m) => format!("inference: context length exceeded: {m}"),
            E::Timeout => "inference: time budget exhausted".to_owned(),
            E::Unavailable(m) => format!("inference: unavailable: {m}"),
            E::Runtime(m) => format!("inference: {m}"),
        };
        Self::Internal(message)
    }
}

impl From<tools::ToolError> for Error {
    fn from(error: tools::ToolError) -> Self {
        use tools::ToolError as E;
        let message = match error {
            E::NotFound(m) => format!("tools: not found: {m}"),
            E::InvalidArguments(m) => format!("tools: invalid arguments: {m}"),
            E::Unavailable(m) => format!("tools: unavailable: {m}"),
            E::Failed(m) => format!("tools: {m}"),
        };
        Self::Internal(message)
    }
}

impl From<events::Error> for Error {
    fn from(error: events::Error) -> Self {
        use events::Error as E;
        let message = match error {
            E::NoSink => "events: no sink configured".to_owned(),
            E::Invalid(m) => format!("events: invalid event: {m}"),
            E::Unavailable(m) => format!("events: unavailable: {m}"),
            E::Delivery(m) => format!("events: delivery failed: {m}"),
        };
        Self::Internal(message)
    }
}

/// JSON errors are the function's own (encoding a response, decoding model output); use
/// [`Request::json`](crate::Request::json) to answer 400 for a malformed request body.
impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(format!("json: {error}"))
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(error: std::str::Utf8Error) -> Self {
        Self::Internal(format!("utf-8: {error}"))
    }
}

impl From<std::string::FromUtf8Error> for Error {
    fn from(error: std::string::FromUtf8Error) -> Self {
        Self::Internal(format!("utf-8: {error}"))
    }
}
