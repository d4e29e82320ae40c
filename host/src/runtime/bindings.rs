//! Host bindings generated from `wit/plugin.wit`; the WIT documents them.

#![allow(
    missing_docs,
    unreachable_pub,
    reason = "generated code, documented in the WIT"
)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Host functions return `wasmtime::Result`: a host failure (a stale
    // resource handle, say) traps the guest instead of panicking the host.
    imports: { default: trappable },
    // Guest calls are async so a long call yields the worker thread.
    exports: { default: async },
    with: {
        "comb:plugin/tracing.span": super::span_api::GuestSpan,
    },
});

pub use self::comb::plugin::types::{HandlerError, Manifest, Request, Response, Route};

impl From<super::RoutedRequest> for Request {
    /// comb's request record for a comb plugin. The record holds strings,
    /// so a header value that is not UTF-8 is decoded lossily; the body is
    /// copied once, into the record the canonical ABI lowers.
    fn from(routed: super::RoutedRequest) -> Self {
        let (parts, body) = routed.http.into_parts();
        Request {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            route: routed.route,
            params: routed.params,
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
        }
    }
}

/// Host bindings for `wasi:otel` (`wit/deps/otel`), the standard guest
/// telemetry interface: the spec's WIT documents them; `wasi_otel.rs`
/// says what comb does with each call.
pub mod otel {
    #![allow(
        missing_docs,
        unreachable_pub,
        reason = "generated code, documented in the WIT"
    )]

    wasmtime::component::bindgen!({
        path: "../wit",
        inline: "
            package comb:host;

            world standard-telemetry {
                import wasi:otel/tracing@0.2.0-rc.2;
                import wasi:otel/metrics@0.2.0-rc.2;
                import wasi:otel/logs@0.2.0-rc.2;
            }
        ",
        imports: { default: trappable },
    });

    pub use self::wasi::otel::{logs, metrics, tracing, types};
}
