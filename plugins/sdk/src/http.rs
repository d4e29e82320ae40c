//! Reading requests and building responses.
//!
//! ```no_run
//! use comb_sdk::{HandlerError, Request, Response, http::Method};
//!
//! #[derive(serde::Deserialize)]
//! struct NewActivity {
//!     message: String,
//! }
//!
//! fn handle(request: Request) -> Result<Response, HandlerError> {
//!     if request.method() != Method::Post {
//!         return Ok(Response::text(405, "POST only"));
//!     }
//!     let new: NewActivity = request.json()?; // not JSON: a bad-request
//!     let handle = request.param("handle").unwrap_or("anonymous");
//!     Ok(Response::json(201, &serde_json::json!({"handle": handle, "message": new.message}))
//!         .with_header("location", "/api/activities/1"))
//! }
//! ```

use serde::{Serialize, de::DeserializeOwned};

use crate::{HandlerError, Request, Response};

/// A response with `status` and `value` as its JSON body: [`Response::json`].
pub fn json(status: u16, value: &impl Serialize) -> Response {
    Response::json(status, value)
}

impl Response {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with `value` as its JSON body (`application/json`).
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        // Serialising a serde_json::Value or a derived struct cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    /// A response with `text` as its body (`text/plain; charset=utf-8`).
    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(text.into())
    }

    /// Adds a header (comb frames the response: `content-length` and other
    /// hop-by-hop headers are its own).
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }
}

/// An HTTP method, as a route or a request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
    /// Any other method (a `*` route receives every method).
    Other(String),
}

impl Method {
    /// The method as `text` names it (upper case).
    pub fn parse(text: &str) -> Method {
        match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl Request {
    /// The request's method.
    pub fn method(&self) -> Method {
        Method::parse(&self.method)
    }

    /// The value of the route parameter `name` (`handle` for `@:handle`).
    pub fn param(&self, name: &str) -> Option<&str> {
        lookup(&self.params, name)
    }

    /// The first value of the query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// The first value of header `name`, in any case (`Content-Type` finds
    /// `content-type`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).next()
    }

    /// Every value of header `name`, in any case, in arrival order.
    pub fn headers_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        (self.headers.iter())
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The body parsed as JSON; a body that is not JSON is a `bad-request`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            HandlerError::BadRequest(format!("request body is not valid JSON: {error}"))
        })
    }
}

/// `?` on the plugin's own JSON work: a failure is the plugin's (500). A
/// request body that is not JSON is the client's: use [`Request::json`].
impl From<serde_json::Error> for HandlerError {
    fn from(error: serde_json::Error) -> Self {
        HandlerError::Internal(error.to_string())
    }
}

/// `?` on I/O (a preopened file, a socket): the plugin failed (500).
impl From<std::io::Error> for HandlerError {
    fn from(error: std::io::Error) -> Self {
        HandlerError::Internal(error.to_string())
    }
}

/// `?` on `anyhow` errors: the plugin failed (500), the message with its
/// causes (`reading config: file not found`).
impl From<anyhow::Error> for HandlerError {
    fn from(error: anyhow::Error) -> Self {
        HandlerError::Internal(format!("{error:#}"))
    }
}

fn lookup<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space and
/// `%XX` a byte; invalid escapes are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..=i + 2]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            method: "PATCH".into(),
            path: "/a".into(),
            route: "/a".into(),
            params: vec![],
            query: "q=caf%C3%A9+au+lait&empty".into(),
            headers: vec![
                ("accept".into(), "text/html".into()),
                ("x-tag".into(), "one".into()),
                ("x-tag".into(), "two".into()),
            ],
            body: b"{\"n\":1}".to_vec(),
        }
    }

    #[test]
    fn requests_read_typed() {
        let request = request();
        assert_eq!(request.method(), Method::Patch);
        assert_eq!(Method::parse("PURGE"), Method::Other("PURGE".into()));
        assert_eq!(request.header("Accept"), Some("text/html"));
        assert_eq!(
            request.headers_named("X-Tag").collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(request.query_param("q").as_deref(), Some("café au lait"));
        assert_eq!(request.query_param("empty").as_deref(), Some(""));
        let body: serde_json::Value = request.json().unwrap();
        assert_eq!(body["n"], 1);
    }

    #[test]
    fn a_body_that_is_not_json_is_a_bad_request_and_own_failures_are_internal() {
        let mut request = request();
        request.body = b"nope".to_vec();
        assert!(matches!(
            request.json::<serde_json::Value>(),
            Err(HandlerError::BadRequest(_))
        ));
        let own = || -> Result<(), HandlerError> {
            serde_json::from_str::<serde_json::Value>("{")?;
            Ok(())
        };
        assert!(matches!(own(), Err(HandlerError::Internal(_))));
        let with_cause = || -> Result<(), HandlerError> {
            Err(anyhow::anyhow!("file not found").context("reading config"))?
        };
        match with_cause() {
            Err(HandlerError::Internal(message)) => {
                assert_eq!(message, "reading config: file not found")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_build() {
        let response = Response::text(404, "no such user").with_header("x-why", "gone");
        assert_eq!(response.status, 404);
        assert_eq!(
            response.headers,
            [
                (
                    "content-type".to_owned(),
                    "text/plain; charset=utf-8".to_owned()
                ),
                ("x-why".to_owned(), "gone".to_owned()),
            ]
        );
        assert_eq!(response.body, b"no such user");
        let json = Response::json(201, &serde_json::json!({"ok": true}));
        assert_eq!(json.body, br#"{"ok":true}"#);
        assert_eq!(Response::new(204).body, b"");
    }
}
