//! The data each per-request store carries: one context per host
//! capability, each reached through its own view.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{Context, global::BoxedTracer};
use wasmtime::{
    CallHook,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView, p2::pipe::MemoryOutputPipe};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{
    STDERR_CAPTURE_LIMIT,
    http_client::ClientHooks,
    log_api::{self, GuestLog, LogApiView},
    sandbox::Sandbox,
    span_api::{self, SpanApiCtx, SpanApiView},
};
use crate::limits::MemoryLimiter;

/// Store data for one invocation.
pub struct InvocationState {
    /// WASI, as the plugin's sandbox allows; stderr is captured so a panic
    /// message can be reported.
    wasi: WasiCtx,
    /// Handles the guest holds: WASI streams and comb spans.
    table: ResourceTable,
    /// The span API's state for this call.
    spans: SpanApiCtx,
    /// The log API's state for this call.
    log: GuestLog,
    /// wasi:http's state, and comb's hooks for outgoing calls.
    http: WasiHttpCtx,
    client: ClientHooks,
    /// The guest's stderr, bounded by [`STDERR_CAPTURE_LIMIT`].
    stderr: MemoryOutputPipe,
    /// The memory cap and high-water mark.
    pub(super) limiter: MemoryLimiter,
    /// Time spent executing guest code, as opposed to host calls.
    pub(super) guest_clock: GuestClock,
}

impl InvocationState {
    /// State for one call whose invocation span is in `invocation`.
    pub fn new(
        tracer: Arc<BoxedTracer>,
        invocation: Context,
        plugin_name: &str,
        sandbox: &Sandbox,
        memory_limit: usize,
    ) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_LIMIT);
        InvocationState {
            wasi: sandbox.wasi(stderr.clone(), invocation.clone()),
            table: ResourceTable::new(),
            client: ClientHooks::new(invocation.clone(), sandbox.http_grants()),
            spans: SpanApiCtx::new(tracer, invocation, plugin_name),
            log: GuestLog::new(plugin_name),
            http: WasiHttpCtx::new(),
            stderr,
            limiter: MemoryLimiter::new(memory_limit),
            guest_clock: GuestClock::default(),
        }
    }

    /// What the guest wrote to stderr so far, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).into_owned()
    }

    /// Log lines the guest logged past the per-call limits.
    pub fn log_dropped(&self) -> u64 {
        self.log.dropped()
    }

    fn log_api(&mut self) -> LogApiView<'_> {
        LogApiView {
            log: &mut self.log,
            spans: &self.spans,
        }
    }

    fn span_api(&mut self) -> SpanApiView<'_> {
        SpanApiView {
            ctx: &mut self.spans,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // An outgoing call's span goes under whatever span the guest has
        // open when it makes the call.
        self.client.current = self.spans.current().clone();
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.client,
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

/// Measures time inside guest code from wasmtime's call hooks, the way
/// Spin does: the clock runs from entering wasm (or returning to it from
/// the host) until leaving it (or calling the host).
#[derive(Debug, Default)]
pub(super) struct GuestClock {
    entered: Option<Instant>,
    total: Duration,
}

impl GuestClock {
    /// Records one transition.
    pub(super) fn on(&mut self, hook: CallHook) {
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromHost => {
                self.entered = Some(Instant::now())
            }
            CallHook::CallingHost | CallHook::ReturningFromWasm => {
                if let Some(entered) = self.entered.take() {
                    self.total += entered.elapsed();
                }
            }
        }
    }

    /// Time spent in guest code so far.
    pub(super) fn total(&self) -> Duration {
        self.total
    }
}

/// Links every host capability a plugin may import.
pub(super) fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    span_api::add_to_linker(linker, InvocationState::span_api)?;
    log_api::add_to_linker(linker, InvocationState::log_api)
}
