//! The host side of `wasi:http/outgoing-handler`: a plugin's outgoing HTTP
//! calls. Any wasi:http client works in the guest; comb sends the request
//! and, for every call:
//!
//! - opens a CLIENT span under the guest's current span, with HTTP client
//!   semantic conventions (`{METHOD}`, `url.full`, `server.address`,
//!   `server.port`, `http.response.status_code`, `error.type`);
//! - injects the trace context into the request headers with the global
//!   propagator (`traceparent`, and `X-Amzn-Trace-Id` when X-Ray is on);
//! - refuses destinations the sidecar does not grant (`[sandbox] http`),
//!   with wasi:http's `HTTP-request-denied` in the guest and on the span;
//! - applies connect, first-byte and between-bytes timeouts.

use std::{future::Future, time::Duration};

use http_body_util::BodyExt;
use opentelemetry::{Context, global, propagation::Injector};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::sandbox::HttpGrants;
use crate::spans;

/// How long to wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait for the response to start, and between its frames.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the `send_request` hook needs: where the call's span goes and what
/// the sandbox allows.
pub struct ClientHooks {
    /// The guest's current span when it made the call; set by the store
    /// before every wasi:http host call.
    pub(super) current: Context,
    grants: HttpGrants,
}

impl ClientHooks {
    /// Hooks for one call under `invocation`, allowed what `grants` grant.
    pub fn new(invocation: Context, grants: HttpGrants) -> Self {
        ClientHooks {
            current: invocation,
            grants,
        }
    }
}

/// The future `send_request` returns, as wasmtime-wasi-http spells it.
type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for ClientHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let uri = request.uri().clone();
        let cx = spans::start_client_span(&self.current, request.method(), &uri);
        let (host, port) = (uri.host().unwrap_or_default(), spans::port_of(&uri));
        if !self.grants.allows(host, port) {
            spans::end_client_span(
                &cx,
                Err((
                    "http.request_denied".to_owned(),
                    format!("{host}:{port} is not granted to this plugin ([sandbox] http)"),
                )),
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }

        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&cx, &mut Headers(request.headers_mut()))
        });
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: options.connect_timeout.or(Some(CONNECT_TIMEOUT)),
            first_byte_timeout: options.first_byte_timeout.or(Some(RESPONSE_TIMEOUT)),
            between_bytes_timeout: options.between_bytes_timeout.or(Some(RESPONSE_TIMEOUT)),
        };
        Box::new(async move {
            let sent = wasmtime_wasi_http::default_send_request(request, Some(options)).await;
            // The span covers the request and the response head; the body
            // streams to the guest afterwards.
            spans::end_client_span(
                &cx,
                match &sent {
                    Ok((response, _)) => Ok(response.status()),
                    Err(error) => Err((error_type(error), format!("{error:?}"))),
                },
            );
            let (response, io) = sent?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// The error's variant name, a low-cardinality `error.type`.
fn error_type(error: &Error) -> String {
    let debug = format!("{error:?}");
    debug
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or("error")
        .to_owned()
}

struct Headers<'a>(&'a mut http::HeaderMap);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
