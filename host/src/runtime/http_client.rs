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
//! - applies the plugin's connect, first-byte and total timeouts
//!   ([`HttpTimeouts`]); a guest may ask for shorter ones.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use opentelemetry::Context;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::sandbox::HttpGrants;
use crate::{limits::HttpTimeouts, spans};

/// What the `send_request` hook needs: where the call's span goes and what
/// the sandbox allows.
pub(crate) struct ClientHooks {
    /// The guest's current span when it made the call; set by the store
    /// before every wasi:http host call.
    pub(super) current: Context,
    grants: HttpGrants,
    timeouts: HttpTimeouts,
}

impl ClientHooks {
    /// Hooks for one call under `invocation`, allowed what `grants` grant,
    /// within `timeouts`.
    pub(crate) fn new(invocation: Context, grants: HttpGrants, timeouts: HttpTimeouts) -> Self {
        ClientHooks {
            current: invocation,
            grants,
            timeouts,
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
                    "http.request_denied",
                    format!("{host}:{port} is not granted to this plugin ([sandbox] http)"),
                )),
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }

        spans::inject(&cx, request.headers_mut());
        let limits = self.timeouts;
        let asked = options.unwrap_or_default();
        let within =
            |asked: Option<Duration>, limit: Duration| Some(asked.map_or(limit, |a| a.min(limit)));
        let options = RequestOptions {
            connect_timeout: within(asked.connect_timeout, limits.connect),
            first_byte_timeout: within(asked.first_byte_timeout, limits.first_byte),
            between_bytes_timeout: within(asked.between_bytes_timeout, limits.first_byte),
        };
        let deadline = Instant::now() + limits.total;
        Box::new(async move {
            let send = wasmtime_wasi_http::default_send_request(request, Some(options));
            let sent = tokio::time::timeout_at(deadline, send)
                .await
                .unwrap_or(Err(Error::HttpResponseTimeout));
            // The span covers the request and the response head; the body
            // streams to the guest afterwards.
            spans::end_client_span(
                &cx,
                match &sent {
                    Ok((response, _)) => Ok(response.status()),
                    Err(error) => Err((error_type(error), error.to_string())),
                },
            );
            let (response, io) = sent?;
            // Past the deadline the body fails and the connection is
            // dropped, whatever the server does.
            let io = async move {
                tokio::time::timeout_at(deadline, io)
                    .await
                    .unwrap_or(Err(Error::HttpResponseTimeout))
            };
            Ok((
                response
                    .map(|body| DeadlineBody::new(body.boxed_unsync(), deadline).boxed_unsync()),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// A response body that fails with `HttpResponseTimeout` once the call's
/// total deadline has passed.
struct DeadlineBody {
    body: WasiBody,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(body: WasiBody, deadline: Instant) -> Self {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Error::HttpResponseTimeout)));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A low-cardinality `error.type`: the wasi:http error code's name (the
/// variant's, as users' queries already match on).
fn error_type(error: &Error) -> &'static str {
    match error {
        Error::Connect(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "ConnectionRefused"
        }
        Error::Connect(_) => "Connect",
        Error::Hyper(_) => "Hyper",
        Error::Tls(_) => "Tls",
        Error::InvalidDnsNameError(_) => "InvalidDnsNameError",
        Error::HttpRequestBodySize(_) => "HttpRequestBodySize",
        Error::DnsTimeout => "DnsTimeout",
        Error::DnsError { .. } => "DnsError",
        Error::DestinationNotFound => "DestinationNotFound",
        Error::DestinationUnavailable => "DestinationUnavailable",
        Error::DestinationIpProhibited => "DestinationIpProhibited",
        Error::DestinationIpUnroutable => "DestinationIpUnroutable",
        Error::ConnectionRefused => "ConnectionRefused",
        Error::ConnectionTerminated => "ConnectionTerminated",
        Error::ConnectionTimeout => "ConnectionTimeout",
        Error::ConnectionReadTimeout => "ConnectionReadTimeout",
        Error::ConnectionWriteTimeout => "ConnectionWriteTimeout",
        Error::ConnectionLimitReached => "ConnectionLimitReached",
        Error::TlsProtocolError => "TlsProtocolError",
        Error::TlsCertificateError => "TlsCertificateError",
        Error::TlsAlertReceived { .. } => "TlsAlertReceived",
        Error::HttpRequestDenied => "HttpRequestDenied",
        Error::HttpRequestLengthRequired => "HttpRequestLengthRequired",
        Error::HttpRequestMethodInvalid => "HttpRequestMethodInvalid",
        Error::HttpRequestUriInvalid => "HttpRequestUriInvalid",
        Error::HttpRequestUriTooLong => "HttpRequestUriTooLong",
        Error::HttpRequestHeaderSectionSize(_) => "HttpRequestHeaderSectionSize",
        Error::HttpRequestHeaderSize { .. } => "HttpRequestHeaderSize",
        Error::HttpRequestTrailerSectionSize(_) => "HttpRequestTrailerSectionSize",
        Error::HttpRequestTrailerSize { .. } => "HttpRequestTrailerSize",
        Error::HttpResponseIncomplete => "HttpResponseIncomplete",
        Error::HttpResponseHeaderSectionSize(_) => "HttpResponseHeaderSectionSize",
        Error::HttpResponseHeaderSize { .. } => "HttpResponseHeaderSize",
        Error::HttpResponseBodySize(_) => "HttpResponseBodySize",
        Error::HttpResponseTrailerSectionSize(_) => "HttpResponseTrailerSectionSize",
        Error::HttpResponseTrailerSize { .. } => "HttpResponseTrailerSize",
        Error::HttpResponseTransferCoding(_) => "HttpResponseTransferCoding",
        Error::HttpResponseContentCoding(_) => "HttpResponseContentCoding",
        Error::HttpResponseTimeout => "HttpResponseTimeout",
        Error::HttpUpgradeFailed => "HttpUpgradeFailed",
        Error::HttpProtocolError => "HttpProtocolError",
        Error::LoopDetected => "LoopDetected",
        Error::ConfigurationError => "ConfigurationError",
        Error::InternalError(_) => "InternalError",
        #[allow(unreachable_patterns, reason = "the enum may grow")]
        _ => "Other",
    }
}
