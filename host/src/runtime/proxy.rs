//! Standard `wasi:http` components, served unmodified — what `wasmtime
//! serve` and Spin run: a WASI 0.2 `wasi:http/proxy` component (its
//! `incoming-handler`) or a WASI 0.3 `wasi:http/service` one (its async
//! `handler`, what spin-sdk 6 and later build). comb hands such a component
//! the request as it arrived and reads the response it answers, under the
//! same invocation span, limits, sandbox, logs and outgoing-call spans as a
//! comb plugin. It has no manifest: comb names it after its file and
//! serves it, by default, on every method under `/NAME/...`.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use opentelemetry::Context;
use wasmtime::{Store, component::InstancePre};
use wasmtime_wasi_http::{
    WasiHttpView,
    p2::{self, bindings::http::types::Scheme},
    p3,
};

use super::{HandlerError, InvokeError, Manifest, Route, state::InvocationState};
use crate::spans;

/// The export that makes a component a WASI 0.2 proxy, at any 0.2 version.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The export that makes a component a WASI 0.3 service, at any 0.3 version.
const HANDLER: &str = "wasi:http/handler@0.3";

/// A standard `wasi:http` component, linked and ready to instantiate.
pub(crate) enum ProxyPre {
    /// WASI 0.2: `wasi:http/proxy`.
    P2(p2::bindings::ProxyPre<InvocationState>),
    /// WASI 0.3: `wasi:http/service`.
    P3(p3::bindings::ServicePre<InvocationState>),
}

impl ProxyPre {
    /// The component in `pre` as a `wasi:http` component, or `None` when it
    /// exports no `wasi:http` handler (so it may be a comb plugin).
    pub(crate) fn new(pre: &InstancePre<InvocationState>) -> Option<wasmtime::Result<Self>> {
        let component = pre.component().component_type();
        let mut exports = component.exports(pre.engine());
        exports.find_map(|(name, _)| {
            if name.starts_with(INCOMING_HANDLER) {
                Some(p2::bindings::ProxyPre::new(pre.clone()).map(ProxyPre::P2))
            } else if name.starts_with(HANDLER) {
                Some(p3::bindings::ServicePre::new(pre.clone()).map(ProxyPre::P3))
            } else {
                None
            }
        })
    }

    /// The engine it was compiled for.
    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        match self {
            ProxyPre::P2(pre) => pre.engine(),
            ProxyPre::P3(pre) => pre.engine(),
        }
    }

    /// Whether an instance may serve more than one request, one at a
    /// time: a 0.3 service's may (its handler is called per request); a 0.2
    /// proxy's serves one.
    pub(crate) fn reusable(&self) -> bool {
        matches!(self, ProxyPre::P3(_))
    }

    /// The component.
    pub(crate) fn component(&self) -> &wasmtime::component::Component {
        match self {
            ProxyPre::P2(pre) => pre.instance_pre().component(),
            ProxyPre::P3(pre) => pre.instance_pre().component(),
        }
    }

    /// The world it serves, as its docs name it.
    fn world(&self) -> &'static str {
        match self {
            ProxyPre::P2(_) => "wasi:http/proxy",
            ProxyPre::P3(_) => "wasi:http/service",
        }
    }
}

/// The manifest comb gives the component `pre` from the file named `stem`:
/// its name is the stem in lower case, anything but letters, digits, `_`
/// and `-` turned into `-` (`Hello.v2` serves `/hello-v2/...`).
pub(crate) fn manifest(stem: &str, pre: &ProxyPre) -> Manifest {
    named(stem, pre.world())
}

fn named(stem: &str, world: &str) -> Manifest {
    let name: String = stem
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    Manifest {
        routes: vec![Route {
            // Any method, the rest of the path: the route table's spelling.
            method: "*".to_owned(),
            pattern: format!("/{name}/..."),
        }],
        name,
        version: "0.0.0".to_owned(),
        description: Some(format!("a {world} component")),
    }
}

/// What a proxy call answered, and the 0.3 service instance to call again
/// when it answered whole.
pub(crate) struct Answered {
    /// The response, or the guest's failure.
    pub response: Result<http::Response<Bytes>, InvokeError>,
    /// The service, sound for another call (only a 0.3 service's, only
    /// after a whole response).
    pub reusable: Option<p3::bindings::Service>,
}

/// Instantiates `pre` in `store` (or, for a 0.3 service, calls `warm`,
/// an instance already in it) and hands it `request` as it arrived
/// (header bytes intact), with the trace context of `invocation` in place
/// of the caller's so a guest that traces joins the trace. The response
/// body is read up to `max_body + 1` bytes (enough for the caller to see it
/// is too large, never more) and until `deadline`.
pub(crate) async fn call(
    pre: &ProxyPre,
    store: &mut Store<InvocationState>,
    request: http::Request<Bytes>,
    invocation: &Context,
    (max_body, deadline): (usize, std::time::Instant),
    warm: Option<p3::bindings::Service>,
) -> Result<Answered, ProxyFailure> {
    let request = as_received(request, invocation);
    let (answered, reusable) = match pre {
        ProxyPre::P2(pre) => (
            call_p2(pre, store, request, max_body, deadline).await?,
            None,
        ),
        ProxyPre::P3(pre) => {
            let service = match warm {
                Some(service) => service,
                None => {
                    (pre.instantiate_async(&mut *store).await).map_err(ProxyFailure::Instantiate)?
                }
            };
            let answered = call_p3(&service, store, request, max_body, deadline).await?;
            let whole = answered.is_ok();
            (answered, whole.then_some(service))
        }
    };
    Ok(Answered {
        response: answered
            .map_err(|failed| InvokeError::Guest(HandlerError::Internal(failed.to_string()))),
        reusable,
    })
}

/// Why a proxy that ran gave no response comb can send: the guest's
/// failure (a 500), not comb's.
#[derive(Debug, thiserror::Error)]
enum NoResponse {
    /// The component answered with a wasi:http error code.
    #[error("the component answered {0}")]
    ErrorCode(String),
    /// The handler returned and the outparam was never set.
    #[error("the component returned without setting a response")]
    NotSet,
    /// The body stream failed.
    #[error("reading the response body: {0}")]
    Body(String),
    /// The guest left its body unfinished past the call's deadline.
    #[error("the response body did not end by the deadline")]
    Unfinished,
}

/// Where a proxy call failed: instantiating it, or in its handler (a trap,
/// a limit), which is not an instantiation failure however it reads.
pub(crate) enum ProxyFailure {
    /// The component could not be instantiated.
    Instantiate(wasmtime::Error),
    /// The handler failed.
    Call(wasmtime::Error),
}

impl From<wasmtime::Error> for ProxyFailure {
    fn from(error: wasmtime::Error) -> Self {
        ProxyFailure::Call(error)
    }
}

/// The request a component is handed: an authority, which wasi:http needs
/// (from the URI or a readable `host`; an HTTP/1.0 client may send none),
/// and the invocation's trace context.
fn as_received(mut request: http::Request<Bytes>, invocation: &Context) -> http::Request<Bytes> {
    let has_authority = request.uri().authority().is_some()
        || (request.headers().get(http::header::HOST)).is_some_and(|host| host.to_str().is_ok());
    if !has_authority {
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    spans::inject(invocation, request.headers_mut());
    request
}

/// A WASI 0.2 proxy: the guest sets the response through an outparam and
/// may go on writing the body after it returns.
async fn call_p2(
    pre: &p2::bindings::ProxyPre<InvocationState>,
    store: &mut Store<InvocationState>,
    request: http::Request<Bytes>,
    max_body: usize,
    deadline: std::time::Instant,
) -> Result<Result<http::Response<Bytes>, NoResponse>, ProxyFailure> {
    let proxy = (pre.instantiate_async(&mut *store).await).map_err(ProxyFailure::Instantiate)?;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let (incoming, outparam) = {
        let mut http = store.data_mut().http();
        (
            http.new_incoming_request(Scheme::Http, request.map(Full::new))?,
            http.new_response_outparam(sender)?,
        )
    };
    // The guest may still be writing the body when it has set the response
    // (writes block once the pipe is full), so read while it runs.
    let handled = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, incoming, outparam);
    let read = async {
        let response = match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Err(NoResponse::ErrorCode(format!("{code:?}"))),
            Err(_) => return Err(NoResponse::NotSet),
        };
        let (parts, body) = response.into_parts();
        let body = read_body(body, max_body).await?;
        Ok(http::Response::from_parts(parts, body))
    };
    tokio::pin!(handled, read);
    Ok(tokio::select! {
        // A trap (the deadline, say) leaves the response channel open in
        // the store: stop at once instead of waiting on it.
        handled = &mut handled => {
            handled?;
            // The guest returned, so the response is set or never will be;
            // only a body the guest left unfinished could keep this open.
            until(deadline, read).await
        }
        read = &mut read => {
            handled.await?;
            read
        }
    })
}

/// A WASI 0.3 service: the guest returns the response, its body a stream
/// that the guest's own tasks may go on writing, so it is read while the
/// store runs them.
async fn call_p3(
    service: &p3::bindings::Service,
    store: &mut Store<InvocationState>,
    request: http::Request<Bytes>,
    max_body: usize,
    deadline: std::time::Instant,
) -> Result<Result<http::Response<Bytes>, NoResponse>, ProxyFailure> {
    let (request, request_io) =
        p3::Request::from_http(store.data_mut().http().hooks, request.map(Full::new));
    store
        .run_concurrent(async |accessor| {
            let response = match service.handle(accessor, request).await? {
                Ok(response) => response,
                Err(code) => return Ok(Err(NoResponse::ErrorCode(format!("{code:?}")))),
            };
            // Errors reading the request body reach the guest through the
            // response's transmit future, as in `wasmtime serve`.
            let response = accessor.with(|store| response.into_http(store, request_io))?;
            let (parts, body) = response.into_parts();
            let read = async {
                Ok(http::Response::from_parts(
                    parts,
                    read_body(body, max_body).await?,
                ))
            };
            Ok(until(deadline, read).await)
        })
        .await?
        .map_err(ProxyFailure::Call)
}

/// A response body read whole, or its first `max_body + 1` bytes.
async fn read_body<B>(mut body: B, max_body: usize) -> Result<Bytes, NoResponse>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut bytes = BytesMut::new();
    while bytes.len() <= max_body {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => return Err(NoResponse::Body(error.to_string())),
            None => break,
        }
    }
    Ok(bytes.freeze())
}

/// `read`, unless the deadline passes first: a guest that leaves its body
/// unfinished must not hold the call past it.
async fn until<T>(
    deadline: std::time::Instant,
    read: impl Future<Output = Result<T, NoResponse>>,
) -> Result<T, NoResponse> {
    tokio::time::timeout_at(deadline.into(), read)
        .await
        .unwrap_or(Err(NoResponse::Unfinished))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_named_and_routed_after_its_file() {
        let manifest = named("Hello.v2", "wasi:http/proxy");
        assert_eq!(manifest.name, "hello-v2");
        assert_eq!(manifest.routes[0].method, "*");
        assert_eq!(manifest.routes[0].pattern, "/hello-v2/...");
        assert_eq!(
            manifest.description.as_deref(),
            Some("a wasi:http/proxy component")
        );
    }
}
