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
