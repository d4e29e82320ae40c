//! The data each per-request store carries: one context per host
//! capability, each reached through its own view.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::{Context, KeyValue, StringValue, global::BoxedTracer, trace::TraceContextExt};
use wasmtime::{
    CallHook, Store,
    component::{Linker, ResourceTable},
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::{
    Guest, GuestProfile,
    budget::Budget,
    guest_log::{self, GuestErrors, GuestLog},
    guest_metrics::{Cumulative, GuestMeter},
    http_client::ClientHooks,
    sandbox::Sandbox,
    span_api::{self, SpanApiCtx, SpanApiView},
    wasi_otel::{self, GuestSpans, OtelView, StandardSpans},
};
use crate::{
    limits::{Limits, MemoryLimiter},
    logs::PluginLogger,
    spans::attributes,
};

/// Store data for one invocation.
pub(crate) struct InvocationState {
    /// WASI, as the plugin's sandbox allows; stdout and stderr go to `log`.
    wasi: WasiCtx,
    /// Handles the guest holds: WASI streams and comb spans.
    table: ResourceTable,
    /// The guest's telemetry in this call: comb's span API, `wasi:otel`.
    telemetry: GuestTelemetry,
    /// The instance's last cumulative metric values, across its calls.
    cumulative: Cumulative,
    /// The plugin's log lines for this call, from the log API and stdio.
    log: GuestLog,
    /// wasi:http's state, and comb's hooks for outgoing calls.
    http: WasiHttpCtx,
    client: ClientHooks,
    /// The memory cap and high-water mark.
    pub(super) limiter: MemoryLimiter,
    /// Time spent executing guest code, as opposed to host calls.
    pub(super) guest_clock: GuestClock,
    /// Which call of this store's instance runs now: 1 for a fresh one,
    /// more when the plugin reuses instances.
    call: u32,
    /// The guest profile this call samples into, at each epoch tick.
    pub(super) profile: Option<Arc<GuestProfile>>,
    /// Keeps the epoch ticking while the store lives (set by
    /// `Runtime::store`): its deadline is checked at the ticks.
    pub(super) ticks: Option<super::engine::Ticks>,
}

impl InvocationState {
    /// State for one call whose invocation span is in `invocation`; the
    /// guest's error lines also go to `errors`.
    pub(crate) fn new(
        tracer: Arc<BoxedTracer>,
        invocation: Context,
        plugin_name: &StringValue,
        sandbox: &Sandbox,
        limits: &Limits,
        reporters: &Reporters,
        signals: GuestSignals,
    ) -> Self {
        const FIRST: u32 = 1;
        let telemetry = GuestTelemetry::new(
            tracer,
            &invocation,
            plugin_name,
            limits,
            FIRST,
            reporters,
            signals.meter,
        );
        let log = GuestLog::new(
            plugin_name.clone(),
            telemetry.spans.current_span(),
            reporters.errors.clone(),
            signals.logger,
        );
        // Handles and header maps cost comb memory outside the guest's
        // linear memory: both are bounded (see `limits`).
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_host_resources);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(crate::limits::MAX_FIELDS_BYTES);
        InvocationState {
            wasi: sandbox.wasi(&log, invocation.clone()),
            table,
            client: ClientHooks::new(invocation, sandbox.http_grants(), limits.http),
            telemetry,
            cumulative: Cumulative::default(),
            log,
            http,
            limiter: MemoryLimiter::new(limits.memory_bytes),
            guest_clock: GuestClock::default(),
            call: FIRST,
            profile: None,
            ticks: None,
        }
    }

    /// Readies a reused instance's store for its next call: everything a
    /// call reports or is bounded by starts afresh under `invocation`;
    /// what the instance holds (its resource table, its memory and the
    /// cap on it, which counts all of it) carries over. The log keeps its identity because the
    /// guest's stdout and stderr streams, which may outlive a call, write
    /// to it.
    pub(crate) fn next_call(
        &mut self,
        guest: &Guest<'_>,
        invocation: Context,
        reporters: &Reporters,
    ) {
        self.call += 1;
        self.telemetry = GuestTelemetry::new(
            guest.tracer.clone(),
            &invocation,
            guest.name,
            guest.limits,
            self.call,
            reporters,
            guest.signals.meter.clone(),
        );
        self.log.next_call(self.telemetry.spans.current_span());
        self.wasi = guest.sandbox.wasi(&self.log, invocation.clone());
        let (grants, timeouts) = (guest.sandbox.http_grants(), guest.limits.http);
        self.client = ClientHooks::new(invocation, grants, timeouts);
        self.guest_clock = GuestClock::default();
        self.profile = guest.profile.clone();
    }

    /// Ends what the guest left open when its call returned: its spans
    /// end with the call, as they would when a fresh store is dropped.
    pub(crate) fn end_call(&mut self) {
        self.log.finish();
        let telemetry = &mut self.telemetry;
        telemetry.spans.end_open();
        // `wasi:otel` spans left open never sent their data.
        telemetry.budget.dropped += telemetry.standard.unfinished();
        // An idle instance holds no profile until its next call joins one.
        self.profile = None;
    }

    /// Which call of its instance this is (1: a fresh instance).
    pub(crate) fn call(&self) -> u32 {
        self.call
    }

    /// The call's log: what the guest wrote to stderr, lines dropped.
    pub(crate) fn log(&self) -> &GuestLog {
        &self.log
    }

    /// What the guest's telemetry cost: drops and refusals.
    pub(crate) fn telemetry(&self) -> &Budget {
        &self.telemetry.budget
    }

    fn guest_log(&mut self) -> &mut GuestLog {
        &mut self.log
    }

    fn span_api(&mut self) -> SpanApiView<'_> {
        SpanApiView {
            ctx: &mut self.telemetry.spans,
            budget: &mut self.telemetry.budget,
            table: &mut self.table,
        }
    }

    fn otel(&mut self) -> OtelView<'_> {
        let telemetry = &mut self.telemetry;
        OtelView {
            standard: &mut telemetry.standard,
            budget: &mut telemetry.budget,
            log: &self.log,
            meter: telemetry.meter.as_deref(),
            metric_points: &mut telemetry.metric_points,
            cumulative: &mut self.cumulative,
        }
    }
}

/// A call's guest telemetry: comb's span API, `wasi:otel`, and the budget
/// both spend.
struct GuestTelemetry {
    spans: SpanApiCtx,
    standard: StandardSpans,
    budget: Budget,
    /// The plugin's instruments, and the points the call exported.
    meter: Option<Arc<GuestMeter>>,
    metric_points: usize,
}

impl GuestTelemetry {
    fn new(
        tracer: Arc<BoxedTracer>,
        invocation: &Context,
        plugin_name: &StringValue,
        limits: &Limits,
        call: u32,
        reporters: &Reporters,
        meter: Option<Arc<GuestMeter>>,
    ) -> Self {
        let context = invocation.span().span_context().clone();
        let name = KeyValue::new(attributes::PLUGIN_NAME, plugin_name.clone());
        GuestTelemetry {
            spans: SpanApiCtx::new(tracer, invocation.clone(), plugin_name.clone(), call),
            standard: StandardSpans::new(context, name, reporters.spans.clone()),
            budget: Budget::new(limits.telemetry),
            meter,
            metric_points: 0,
        }
    }
}

/// What a plugin's calls send under its own name, made at load and shared
/// by its calls: its instruments (`wasi:otel` metrics, in comb's meter)
/// and its logger (its lines as log records, when logs are exported).
/// Cheap to clone; a manifest read has neither.
#[derive(Clone, Default)]
pub(crate) struct GuestSignals {
    /// Its instruments.
    pub meter: Option<Arc<GuestMeter>>,
    /// Its logger.
    pub logger: Option<Arc<PluginLogger>>,
}

/// Where what guests report goes besides their spans and comb's log: their
/// error lines (Rollbar), their own finished spans (`wasi:otel`, into comb's
/// span pipeline). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Reporters {
    /// Error-level log lines.
    pub errors: Option<GuestErrors>,
    /// Spans a guest finished itself.
    pub spans: Option<GuestSpans>,
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // An outgoing call's span goes under whatever span the guest has
        // open when it makes the call.
        self.client.current = match self.telemetry.standard.current() {
            Some(span) => Context::new().with_remote_span_context(span.clone()),
            None => self.telemetry.spans.current().clone(),
        };
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

/// Starts measuring the guest's CPU time in `store` (see [`GuestClock`]).
/// A reused instance's store may have its clock from an earlier call;
/// setting the hook again replaces it.
pub(super) fn clock_guest(store: &mut Store<InvocationState>) {
    store.call_hook(|mut context, hook| {
        context.data_mut().guest_clock.on(hook);
        Ok(())
    });
}

/// Links every host capability a plugin may import; WASI 0.3 too when the
/// linker's engine has the component model's concurrency.
pub(super) fn add_to_linker(
    linker: &mut Linker<InvocationState>,
    concurrent: bool,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    // WASI 0.3, for `wasi:http/service` components (see `proxy`).
    if concurrent {
        wasmtime_wasi::p3::add_to_linker(linker)?;
        wasmtime_wasi_http::p3::add_to_linker(linker)?;
    }
    span_api::add_to_linker(linker, InvocationState::span_api)?;
    wasi_otel::add_to_linker(linker, InvocationState::otel)?;
    guest_log::add_to_linker(linker, InvocationState::guest_log)
}
