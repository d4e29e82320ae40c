//! The data each per-request store carries: one context per host
//! capability, each reached through its own view.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{Context, StringValue, global::BoxedTracer};
use wasmtime::{
    CallHook,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{
    guest_log::{self, GuestLog},
    http_client::ClientHooks,
    sandbox::Sandbox,
    span_api::{self, SpanApiCtx, SpanApiView},
};
use crate::limits::{Limits, MemoryLimiter};

/// Store data for one invocation.
pub(crate) struct InvocationState {
    /// WASI, as the plugin's sandbox allows; stdout and stderr go to `log`.
    wasi: WasiCtx,
    /// Handles the guest holds: WASI streams and comb spans.
    table: ResourceTable,
    /// The span API's state for this call.
    spans: SpanApiCtx,
    /// The plugin's log lines for this call, from the log API and stdio.
    log: GuestLog,
    /// wasi:http's state, and comb's hooks for outgoing calls.
    http: WasiHttpCtx,
    client: ClientHooks,
    /// The memory cap and high-water mark.
    pub(super) limiter: MemoryLimiter,
    /// Time spent executing guest code, as opposed to host calls.
    pub(super) guest_clock: GuestClock,
}

impl InvocationState {
    /// State for one call whose invocation span is in `invocation`.
    pub(crate) fn new(
        tracer: Arc<BoxedTracer>,
        invocation: Context,
        plugin_name: &StringValue,
        sandbox: &Sandbox,
        limits: &Limits,
    ) -> Self {
        let spans = SpanApiCtx::new(
            tracer,
            invocation.clone(),
            plugin_name.clone(),
            limits.telemetry,
        );
        let log = GuestLog::new(plugin_name.clone(), spans.current_span());
        InvocationState {
            wasi: sandbox.wasi(&log, invocation.clone()),
            table: ResourceTable::new(),
            client: ClientHooks::new(invocation, sandbox.http_grants(), limits.http),
            spans,
            log,
            http: WasiHttpCtx::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            guest_clock: GuestClock::default(),
        }
    }

    /// The call's log: what the guest wrote to stderr, lines dropped.
    pub(crate) fn log(&self) -> &GuestLog {
        &self.log
    }

    /// The span API's state: what the guest's telemetry cost.
    pub(crate) fn spans(&self) -> &SpanApiCtx {
        &self.spans
    }

    fn guest_log(&mut self) -> &mut GuestLog {
        &mut self.log
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
    guest_log::add_to_linker(linker, InvocationState::guest_log)
}
