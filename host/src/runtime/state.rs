//! The data each per-request store carries: one context per host
//! capability, each reached through its own view.

use std::sync::Arc;

use opentelemetry::{Context, global::BoxedTracer};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView, p2::pipe::MemoryOutputPipe};

use super::{
    STDERR_CAPTURE_LIMIT,
    span_api::{self, SpanApiCtx, SpanApiView},
};

/// Store data for one invocation.
pub struct InvocationState {
    /// WASI: no files, no environment, no arguments, no sockets; stderr is
    /// captured so a panic message can be reported.
    wasi: WasiCtx,
    /// Handles the guest holds: WASI streams and comb spans.
    table: ResourceTable,
    /// The span API's state for this call.
    spans: SpanApiCtx,
    /// The guest's stderr, bounded by [`STDERR_CAPTURE_LIMIT`].
    stderr: MemoryOutputPipe,
}

impl InvocationState {
    /// State for one call whose invocation span is in `invocation`.
    pub fn new(tracer: Arc<BoxedTracer>, invocation: Context, plugin_name: &str) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_LIMIT);
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        InvocationState {
            wasi,
            table: ResourceTable::new(),
            spans: SpanApiCtx::new(tracer, invocation, plugin_name),
            stderr,
        }
    }

    /// What the guest wrote to stderr so far, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }

    fn span_api(&mut self) -> SpanApiView<'_> {
        SpanApiView {
            ctx: &mut self.spans,
            table: &mut self.table,
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Links every host capability a plugin may import.
pub(super) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    span_api::add_to_linker(linker, InvocationState::span_api)
}
