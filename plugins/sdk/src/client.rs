//! Outgoing HTTP from a plugin, through the standard
//! `wasi:http/outgoing-handler` (any wasi:http client works too). comb
//! sends the request, as a CLIENT span in the request's trace with the
//! trace context in its headers, to destinations the plugin's sidecar
//! grants (`[sandbox] http`).
//!
//! ```no_run
//! use comb_sdk::{HandlerError, client};
//!
//! fn upstream_status() -> Result<u16, HandlerError> {
//!     // A failure is the plugin's: `?` makes it an `internal` error (500).
//!     let response = client::get("http://127.0.0.1:4567/api/activities/home")?;
//!     Ok(response.status)
//! }
//! ```

use wasip2::{
    http::{
        outgoing_handler,
        types::{
            Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme, http_error_code,
        },
    },
    io::streams::StreamError,
};

/// A response to an outgoing request, body read whole.
#[derive(Debug, Clone)]
pub struct FetchedResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Why an outgoing request failed: wasi:http's error code, spelled out
/// (`HttpRequestDenied` for a destination not granted,
/// `ConnectionRefused`, `HttpResponseTimeout`, ...), or what was wrong
/// with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// `?` on an outgoing request: the plugin failed (500).
impl From<ClientError> for crate::HandlerError {
    fn from(error: ClientError) -> Self {
        crate::HandlerError::Internal(format!("outgoing request failed: {error}"))
    }
}

/// GETs `url`.
pub fn get(url: &str) -> Result<FetchedResponse, ClientError> {
    send("GET", url, &[], &[])
}

/// Sends `method url` with `headers` and `body`.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<FetchedResponse, ClientError> {
    try_send(method, url, headers, body).map_err(ClientError)
}

fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<FetchedResponse, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} has no scheme"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| format!("header {name}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    };
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let invalid = |what: &str| format!("invalid {what} in {url:?}");
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;

    let outgoing = request
        .body()
        .map_err(|()| "request body taken".to_owned())?;
    if !body.is_empty() {
        let stream = outgoing
            .write()
            .map_err(|()| "request body stream taken".to_owned())?;
        // wasi:io caps one blocking write at 4096 bytes.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("writing the request body: {e:?}"))?;
        }
    }
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response after waiting")?
        .map_err(|()| "response already taken".to_owned())?
        .map_err(|e| format!("{e:?}"))?;

    let status = response.status();
    let headers = response.headers().entries().into_iter().collect();
    let incoming = response
        .consume()
        .map_err(|()| "response body taken".to_owned())?;
    let stream = incoming
        .stream()
        .map_err(|()| "response body stream taken".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            // The stream's error wraps wasi:http's code, e.g. a timeout.
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match http_error_code(&e) {
                    Some(code) => format!("reading the response body: {code:?}"),
                    None => format!("reading the response body: {}", e.to_debug_string()),
                });
            }
        }
    }
    drop(stream);
    let _trailers = IncomingBody::finish(incoming);
    Ok(FetchedResponse {
        status,
        headers,
        body,
    })
}
