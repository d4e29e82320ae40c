//! Standard `wasi:http/proxy` components, served unmodified — what
//! `wasmtime serve` and Spin run. comb hands such a component the request
//! as a `wasi:http` incoming request and reads the response it sets, under
//! the same invocation span, limits, sandbox, logs and outgoing-call spans
//! as a comb plugin. It has no manifest: comb names it after its file and
//! serves it, by default, on every method under `/NAME/...`.

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use opentelemetry::Context;
use wasmtime::Store;
use wasmtime_wasi_http::{
    WasiHttpView,
    p2::bindings::{ProxyPre, http::types::Scheme},
};

use super::{HandlerError, InvokeError, Manifest, Route, state::InvocationState};
use crate::spans;

/// The export that makes a component a proxy, at any 0.2 version.
pub(crate) const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The manifest comb gives a proxy component from the file named `stem`:
/// its name is the stem in lower case, anything but letters, digits, `_`
/// and `-` turned into `-` (`Hello.v2` serves `/hello-v2/...`).
pub(crate) fn manifest(stem: &str) -> Manifest {
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
        description: Some("a wasi:http/proxy component".to_owned()),
    }
}

/// Instantiates `pre` in `store` and hands it `request` as it arrived
/// (header bytes intact), with the trace context of `invocation` in place
/// of the caller's so a guest that traces joins the trace. The response
/// body is read up to `max_body + 1` bytes (enough for the caller to see it
/// is too large, never more) and until `deadline`.
pub(crate) async fn call(
    pre: &ProxyPre<InvocationState>,
    store: &mut Store<InvocationState>,
    mut request: http::Request<Bytes>,
    invocation: &Context,
    max_body: usize,
    deadline: std::time::Instant,
) -> Result<Result<http::Response<Bytes>, InvokeError>, wasmtime::Error> {
    let proxy = pre.instantiate_async(&mut *store).await?;
    // wasi:http needs an authority, from the URI or a readable `host`;
    // an HTTP/1.0 client may send none.
    let has_authority = request.uri().authority().is_some()
        || (request.headers().get(http::header::HOST)).is_some_and(|host| host.to_str().is_ok());
    if !has_authority {
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_static("localhost"),
        );
    }
    spans::inject(invocation, request.headers_mut());
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
            Ok(Err(code)) => return Err(format!("the component answered {code:?}")),
            Err(_) => return Err("the component returned without setting a response".to_owned()),
        };
        let (parts, mut body) = response.into_parts();
        let mut bytes = BytesMut::new();
        while bytes.len() <= max_body {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Some(Err(error)) => return Err(format!("reading the response body: {error}")),
                None => break,
            }
        }
        Ok(http::Response::from_parts(parts, bytes.freeze()))
    };
    tokio::pin!(handled, read);
    let read = tokio::select! {
        // A trap (the deadline, say) leaves the response channel open in
        // the store: stop at once instead of waiting on it.
        handled = &mut handled => {
            handled?;
            // The guest returned, so the response is set or never will be;
            // only a body the guest left unfinished could keep this open.
            tokio::time::timeout_at(deadline.into(), read)
                .await
                .unwrap_or_else(|_| Err("the response body did not end by the deadline".to_owned()))
        }
        read = &mut read => {
            handled.await?;
            read
        }
    };
    Ok(read.map_err(|message| InvokeError::Guest(HandlerError::Internal(message))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_named_and_routed_after_its_file() {
        let manifest = manifest("Hello.v2");
        assert_eq!(manifest.name, "hello-v2");
        assert_eq!(manifest.routes[0].method, "*");
        assert_eq!(manifest.routes[0].pattern, "/hello-v2/...");
    }
}
