//! The wasmtime side of comb: one engine and linker for all plugins (and a
//! second for WASI 0.3 components: [`Runtime`] says why), a fresh store
//! and instance per call (or a warm one, for a plugin whose sidecar opts
//! into reuse: `reuse`).
//!
//! Following wasmtime's own `serve`: compile a component once, link it once
//! into an [`InstancePre`] (here the
//! generated [`PluginPre`], or a `proxy::ProxyPre` for a standard
//! `wasi:http` component), then per request create a `Store`,
//! instantiate from the pre-linked component and call the export. A fresh instance per
//! request is comb's isolation promise: nothing leaks between requests —
//! unless a plugin's deployer trades it, for that plugin's own calls only,
//! for speed (`reuse`).
//! The deadline bounds the whole call, host calls included, and a long
//! call moves off the request path's threads (`guest_pool`).

pub mod bindings;
mod budget;
mod function_cache;
pub(crate) mod guest_log;
pub(crate) mod guest_metrics;
pub(crate) mod guest_pool;
pub(crate) mod http_client;
pub(crate) mod outcome;
mod panic;
mod profile;
pub(crate) mod proxy;
pub(crate) mod reuse;
pub(crate) mod sandbox;
pub(crate) mod span_api;
mod state;
pub(crate) mod wasi_otel;

mod engine;
mod traps;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use bytes::Bytes;
use opentelemetry::{Context, StringValue, global::BoxedTracer, trace::TraceContextExt};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, ProfilingStrategy, Store, UpdateDeadline,
    component::{Component, InstancePre},
};

pub(crate) use bindings::{HandlerError, Manifest, PluginPre, Request, Response, Route};
use function_cache::FunctionCache;
pub use guest_log::{GuestErrorLine, GuestErrorSink, GuestErrors};
pub(crate) use guest_metrics::GuestMeter;
use guest_pool::{CallPanicked, GuestPool};
pub use outcome::{Backtrace, ERROR_TYPES, Frame, InvalidResponse, InvokeError, TrapKind};
pub use panic::GuestPanic;
pub use profile::{GuestProfile, MAX_WINDOW as MAX_PROFILE_WINDOW};
use proxy::ProxyPre;
use reuse::{IdleInstance, IdleInstances, Instance};
use sandbox::Sandbox;
pub(crate) use state::GuestSignals;
use state::{InvocationState, Reporters};
pub use wasi_otel::GuestSpans;

use engine::CONCURRENT_POOL_INSTANCES;
pub use engine::EngineConfig;
pub(crate) use engine::POOL_INSTANCES;
use engine::{EpochTicker, Linked, imports_wasi_0_3};
use traps::{call_error, trap};

use crate::limits::Limits;

/// How often the engine's epoch advances (1 ms): the granularity of
/// deadlines, and how soon a long call is demoted (see [`guest_pool`]).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long a plugin's `manifest.describe` may run at load, host calls
/// included.
pub(crate) const MANIFEST_DEADLINE: Duration = Duration::from_secs(5);

/// What wasmtime's cache of compiled components may take before its
/// cleanup removes the least used (a soft limit: it cleans periodically).
/// With the function cache and the registry's layers, `--cache-dir` stays
/// within the deploy manifests' 1 GiB `emptyDir`.
const COMPILED_CACHE_BYTES: u64 = 384 << 20;

/// How far past its deadline a call waiting in a host call is dropped:
/// long enough that a computing guest is interrupted by the epoch first.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);

/// A request as the server read it (head, and body read whole within the
/// plugin's limit) with the route that matched. Each kind of plugin gets it
/// in its own form, chosen while it is still HTTP: a comb plugin comb's
/// WIT record, a standard `wasi:http` component the HTTP request itself, its
/// header bytes intact.
pub struct RoutedRequest {
    /// The request.
    pub http: http::Request<Bytes>,
    /// The route pattern that matched, e.g. `/api/activities/@:handle`.
    pub route: String,
    /// The pattern's parameters with their values, in pattern order.
    pub params: Vec<(String, String)>,
}

/// What a plugin answered, in its own form; the server checks it and
/// frames it (see [`crate::server`]).
#[derive(Debug)]
pub enum Answer {
    /// A comb plugin's response record.
    Record(Response),
    /// A standard `wasi:http` component's response, its body read whole.
    Http(http::Response<Bytes>),
}

impl Answer {
    /// The length of the body.
    pub(crate) fn body_len(&self) -> usize {
        match self {
            Answer::Record(response) => response.body.len(),
            Answer::Http(response) => response.body().len(),
        }
    }
}

/// A plugin compiled and linked against comb's imports, ready to
/// instantiate: a component of comb's `plugin` world, or a standard
/// `wasi:http` one (WASI 0.2 or 0.3).
pub(crate) enum PreparedPlugin {
    /// comb's world: a manifest and a handler.
    Comb(PluginPre<InvocationState>),
    /// A standard `wasi:http` component, WASI 0.2 or 0.3 (see [`proxy`]).
    Proxy(ProxyPre),
}

impl PreparedPlugin {
    /// The engine it was compiled for, which its stores must come from.
    fn engine(&self) -> &Engine {
        match self {
            PreparedPlugin::Comb(pre) => pre.engine(),
            PreparedPlugin::Proxy(pre) => pre.engine(),
        }
    }

    /// The component.
    fn component(&self) -> &Component {
        match self {
            PreparedPlugin::Comb(pre) => pre.instance_pre().component(),
            PreparedPlugin::Proxy(pre) => pre.component(),
        }
    }
}

/// The engines and linkers shared by every plugin.
///
/// Two engines: WASI 0.3 components need the component model's concurrency
/// (async exports, streams, futures), and a store of an engine with it
/// costs every call — measured at +25–43 % CPU per request of a plain
/// plugin (`tests/bench/throughput.py`, `BENCH_BASELINE`). So plugins and
/// WASI 0.2 components run on an engine without it, and only a component
/// that needs it (it fails to validate or link without) on the second.
pub struct Runtime {
    /// Where a long call moves, so a busy guest never holds a worker that
    /// accepts connections and polls sockets.
    pool: GuestPool,
    /// The engine almost every plugin runs on.
    sync: Linked,
    /// The engine with the component model's concurrency, for WASI 0.3.
    concurrent: Linked,
    /// Advances the epoch that deadlines are counted in while a store
    /// exists; stops on drop.
    ticker: EpochTicker,
    /// Whether instances come from the pooling allocator.
    pooled: bool,
    /// Whether fuel metering is on.
    fuel: bool,
    /// The compile cache, when on: its hit counters tell a load whether it
    /// compiled or read compiled code back.
    cache: Option<Cache>,
    /// Held while compiling.
    compiling: std::sync::Mutex<()>,
    /// Where guests' error lines and own finished spans go.
    reporters: Reporters,
    /// Whether every call's guest CPU time is measured, not only that of
    /// calls whose invocation span records it.
    measure_guest_cpu: bool,
}

/// How a plugin's code was compiled.
#[derive(Debug, Clone, Copy)]
pub struct Compiled {
    /// How long compiling (or reading from the cache) took.
    pub duration: Duration,
    /// Whether the compiled code came from the cache; `None` without one.
    pub cache_hit: Option<bool>,
}

/// Which plugin a call runs, and under what rules.
pub(crate) struct Guest<'a> {
    /// The pre-linked component.
    pub pre: &'a PreparedPlugin,
    /// The tracer its spans start with.
    pub tracer: Arc<BoxedTracer>,
    /// Its instruments and its logger.
    pub signals: &'a GuestSignals,
    /// Its name, for `plugin.name` on its spans and log lines.
    pub name: &'a StringValue,
    /// The limits the call runs under.
    pub limits: &'a Limits,
    /// What the call may reach.
    pub sandbox: &'a Sandbox,
    /// Its idle instances, when it reuses them.
    pub idle: &'a IdleInstances,
    /// The profile this call samples into, when one is being taken.
    pub profile: Option<Arc<GuestProfile>>,
}

/// What one call took and used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    /// Creating the store and instantiating the component.
    pub instantiate: Duration,
    /// The guest's `handle` call itself, wall-clock.
    pub call: Duration,
    /// Time executing guest code (instantiation included), without the
    /// time spent in host calls.
    pub guest_cpu: Duration,
    /// The most linear memory the instance held.
    pub memory_peak: usize,
    /// Fuel consumed, when metering is on.
    pub fuel_consumed: Option<u64>,
    /// Log lines past the per-call limits, counted instead of kept.
    pub log_dropped: u64,
    /// Spans, attributes and events past the per-call telemetry limits.
    pub telemetry_dropped: u64,
    /// Attempts to set comb's own attribute keys or span names.
    pub telemetry_refused: u64,
    /// Which call of its instance this was (1: a fresh instance), for a
    /// plugin that reuses instances.
    pub instance_call: Option<u32>,
}

impl Runtime {
    /// Creates the engine and links comb's host interfaces (WASI, tracing).
    ///
    /// With a cache dir, compiled code is cached there, keyed by the
    /// component's bytes and the engine's settings and version, so a restart
    /// skips compiling; wasmtime checks each entry and recompiles a corrupt
    /// or stale one.
    pub fn new(settings: &EngineConfig) -> anyhow::Result<Self> {
        let mut config = Config::new();
        // Deadlines: the epoch advances every EPOCH_TICK; each store's
        // callback decides to yield or to interrupt. Cheaper than fuel, and
        // it bounds wall-clock time, which is what callers wait on.
        config.epoch_interruption(true);
        // Fuel counts instructions: deterministic, but it costs on every
        // call, so it is on only when asked for.
        config.consume_fuel(settings.fuel);
        if settings.perf_map {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let cache = match &settings.cache_dir {
            Some(dir) => {
                // Each cache in a folder of its own: wasmtime's cleanup
                // deletes whatever it does not know in its folder (the
                // registry's layers, once, when it was the whole cache).
                remove_old_compiled_cache(&dir.join("modules"));
                let mut cache_config = CacheConfig::new();
                cache_config
                    .with_directory(dir.join("compiled"))
                    .with_files_total_size_soft_limit(COMPILED_CACHE_BYTES);
                let functions = FunctionCache::open(&dir.join("functions"))
                    .with_context(|| format!("opening {}", dir.join("functions").display()))?;
                config.enable_incremental_compilation(Arc::new(functions))?;
                Some(Cache::new(cache_config)?)
            }
            None => None,
        };
        config.cache(cache.clone());
        let (sync, pooled) = Linked::new(config.clone(), settings, false)?;
        let (concurrent, _) = Linked::new(config, settings, true)?;
        Ok(Runtime {
            pool: GuestPool::new((POOL_INSTANCES + CONCURRENT_POOL_INSTANCES) as usize + 16),
            ticker: EpochTicker::start(vec![sync.engine.clone(), concurrent.engine.clone()]),
            sync,
            concurrent,
            pooled,
            fuel: settings.fuel,
            cache,
            compiling: std::sync::Mutex::new(()),
            reporters: Reporters::default(),
            measure_guest_cpu: false,
        })
    }

    /// Sends plugins' error-level log lines to `errors` too (Rollbar's
    /// `--rollbar-guest-errors`).
    pub fn report_guest_errors(mut self, errors: GuestErrors) -> Self {
        self.reporters.errors = Some(errors);
        self
    }

    /// Measures every call's guest CPU time (for the `faas.cpu_usage`
    /// metric); otherwise only calls whose invocation span is recorded are
    /// measured, since nothing else reports it. The clock costs each call
    /// a hook on every entry to and exit from the guest.
    pub fn measure_guest_cpu(mut self) -> Self {
        self.measure_guest_cpu = true;
        self
    }

    /// Sends the spans guests finish themselves (`wasi:otel`) to `spans`,
    /// comb's span pipeline; without it they are dropped.
    pub fn export_guest_spans(mut self, spans: GuestSpans) -> Self {
        self.reporters.spans = Some(spans);
        self
    }

    /// Runs `call` (a plugin call, or a manifest read) on the guest pool
    /// and waits for it. A panic in it is returned as an error.
    pub(crate) async fn on_guest_pool<T: Send + 'static>(
        &self,
        call: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, CallPanicked> {
        self.pool.run(call).await
    }

    /// Whether instances come from the pooling allocator.
    pub(crate) fn pooled(&self) -> bool {
        self.pooled
    }

    /// Whether fuel metering is on.
    pub(crate) fn fuel(&self) -> bool {
        self.fuel
    }

    /// Compiles a component and links it against comb's imports.
    ///
    /// Fails with a readable reason when the bytes are not a component, or
    /// the component imports something comb does not provide or lacks an
    /// export of the `plugin` world.
    ///
    /// Compiles run one at a time (each uses every core already): the
    /// cache hit is read from the cache's counters around the compile.
    pub(crate) fn prepare(&self, wasm: &[u8]) -> anyhow::Result<(PreparedPlugin, Compiled)> {
        let _one_at_a_time = self
            .compiling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let hits_before = self.cache.as_ref().map(Cache::cache_hits);
        let started = Instant::now();
        let (component, pre) = self.link(wasm)?;
        let compiled = Compiled {
            duration: started.elapsed(),
            cache_hit: hits_before
                .zip(self.cache.as_ref())
                .map(|(before, cache)| cache.cache_hits() > before),
        };
        if let Some(proxy) = ProxyPre::new(&pre) {
            return Ok((PreparedPlugin::Proxy(proxy?), compiled));
        }
        let exports: Vec<String> = component
            .component_type()
            .exports(pre.engine())
            .map(|(name, _)| name.to_owned())
            .collect();
        let pre = PluginPre::new(pre).map_err(|error| {
            // Say what the component does export: typically the same
            // interfaces at another version of the WIT package.
            let exports = if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            };
            anyhow::Error::from(error).context(format!("the component exports {exports}"))
        })?;
        Ok((PreparedPlugin::Comb(pre), compiled))
    }

    /// Compiles and links `wasm` on the engine it needs. A component that
    /// needs concurrency fails on the first engine before anything is
    /// compiled (async lifts and streams do not validate), or links there
    /// only if it imports WASI 0.3; any other failure is the component's
    /// own, reported without compiling it a second time.
    fn link(&self, wasm: &[u8]) -> wasmtime::Result<(Component, InstancePre<InvocationState>)> {
        let Ok(component) = Component::from_binary(&self.sync.engine, wasm) else {
            return self.concurrent.link(wasm);
        };
        match self.sync.linker.instantiate_pre(&component) {
            Ok(pre) => Ok((component, pre)),
            Err(_) if imports_wasi_0_3(&component, &self.sync.engine) => self.concurrent.link(wasm),
            Err(error) => Err(error),
        }
    }

    /// Calls the plugin's `manifest.describe` in a throwaway instance whose
    /// spans and log lines go under the span in `load`, attributed to `file`.
    pub(crate) async fn describe(
        &self,
        pre: &PluginPre<InvocationState>,
        tracer: Arc<BoxedTracer>,
        limits: &Limits,
        load: Context,
        file: &str,
    ) -> anyhow::Result<Manifest> {
        let limits = Limits {
            deadline: MANIFEST_DEADLINE,
            ..*limits
        };
        let file = StringValue::from(file.to_owned());
        let state = InvocationState::new(
            tracer,
            load,
            &file,
            &Sandbox::default(),
            &limits,
            &self.reporters,
            GuestSignals::default(),
        );
        let mut store = self.store(pre.engine(), state, &limits)?;
        let describe = async {
            let plugin = pre.instantiate_async(&mut store).await?;
            plugin
                .comb_plugin_manifest()
                .call_describe(&mut store)
                .await
        };
        // The epoch deadline ends a guest that computes; this one ends a
        // guest that waits in a host call (a sleep, say).
        let manifest = tokio::time::timeout(MANIFEST_DEADLINE + DEADLINE_SLACK, describe)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the manifest did not return within {} s",
                    MANIFEST_DEADLINE.as_secs()
                )
            })?;
        store.data_mut().end_call();
        Ok(manifest?)
    }

    /// Runs one request in a fresh instance, or a warm one of a plugin that
    /// reuses them. Guest spans become children of the span in `invocation`.
    ///
    /// The deadline is wall-clock for the whole call: instantiation, guest
    /// code (interrupted at an epoch tick) and host calls (a sleep, an
    /// outgoing request), which a timer ends by dropping the call.
    pub(crate) async fn invoke(
        &self,
        guest: Guest<'_>,
        request: RoutedRequest,
        invocation: Context,
    ) -> (Result<Answer, InvokeError>, CallStats) {
        let started = Instant::now();
        let deadline = guest.limits.deadline;
        // Slack so a computing guest meets the epoch deadline first and
        // its trap keeps the backtrace.
        match tokio::time::timeout(
            deadline + DEADLINE_SLACK,
            self.invoke_until(guest, request, invocation),
        )
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => (
                Err(InvokeError::Deadline { backtrace: None }),
                CallStats {
                    call: started.elapsed(),
                    ..CallStats::default()
                },
            ),
        }
    }

    /// The call itself, by kind of plugin, within the deadline that
    /// [`Runtime::invoke`] holds it to.
    async fn invoke_until(
        &self,
        guest: Guest<'_>,
        request: RoutedRequest,
        invocation: Context,
    ) -> (Result<Answer, InvokeError>, CallStats) {
        match guest.pre {
            PreparedPlugin::Proxy(pre) => self.invoke_proxy(pre, &guest, request, invocation).await,
            PreparedPlugin::Comb(pre) => self.invoke_comb(pre, &guest, request, invocation).await,
        }
    }

    /// A standard `wasi:http` component's call: always a fresh instance,
    /// instantiated and called in one step, handed the HTTP request.
    async fn invoke_proxy(
        &self,
        pre: &ProxyPre,
        guest: &Guest<'_>,
        request: RoutedRequest,
        invocation: Context,
    ) -> (Result<Answer, InvokeError>, CallStats) {
        let mut stats = CallStats::default();
        let started = Instant::now();
        let limits = guest.limits;
        // A 0.3 service's idle instance, when its plugin keeps them.
        let warm = guest.idle.take().and_then(|idle| match idle.instance {
            Instance::Service(service) => Some((idle.store, service)),
            Instance::Comb(_) => None,
        });
        let (mut store, warm) = match warm {
            Some((mut store, service)) => match self.ready(&mut store, guest, invocation.clone()) {
                Ok(()) => (store, Some(service)),
                Err(error) => return (Err(call_error(error, &store)), stats),
            },
            None => match self.fresh_store(guest, invocation.clone()) {
                Ok(store) => (store, None),
                Err(error) => return (Err(error), stats),
            },
        };
        let result = proxy::call(
            pre,
            &mut store,
            request.http,
            &invocation,
            (limits.max_response_body, started + limits.deadline),
            warm,
        )
        .await;
        stats.call = started.elapsed();
        let (result, reusable) = match result {
            Ok(answered) => (answered.response.map(Answer::Http), answered.reusable),
            Err(proxy::ProxyFailure::Instantiate(error)) => (Err(call_error(error, &store)), None),
            Err(proxy::ProxyFailure::Call(error)) => {
                (Err(trap(error, &store.data().log().stderr())), None)
            }
        };
        let stats = self.finish(&mut store, limits, stats);
        if let Some(service) = reusable
            && store.data().call() < limits.max_instance_reuse_count
        {
            guest.idle.put(IdleInstance {
                store,
                instance: Instance::Service(service),
            });
        }
        (result, stats)
    }

    /// A comb plugin's call: on a warm instance when the plugin keeps
    /// them and one is idle, else a fresh one; handed comb's WIT request.
    async fn invoke_comb(
        &self,
        pre: &PluginPre<InvocationState>,
        guest: &Guest<'_>,
        request: RoutedRequest,
        invocation: Context,
    ) -> (Result<Answer, InvokeError>, CallStats) {
        let mut stats = CallStats::default();
        let started = Instant::now();
        let limits = guest.limits;
        let request = Request::from(request);
        let warm = guest.idle.take().and_then(|idle| match idle.instance {
            Instance::Comb(plugin) => Some((idle.store, plugin)),
            Instance::Service(_) => None,
        });
        let (mut store, instantiated) = match warm {
            Some((mut store, plugin)) => {
                let armed = self.ready(&mut store, guest, invocation);
                (store, armed.map(|()| plugin))
            }
            None => {
                let mut store = match self.fresh_store(guest, invocation) {
                    Ok(store) => store,
                    Err(error) => return (Err(error), stats),
                };
                let instantiated = pre.instantiate_async(&mut store).await;
                (store, instantiated)
            }
        };
        stats.instantiate = started.elapsed();
        // The instance, when it came through its call sound: not after a
        // trap or a limit, which may leave it mid-way through anything.
        let (result, sound) = match instantiated {
            Ok(plugin) => {
                let called = Instant::now();
                let result = plugin
                    .comb_plugin_handler()
                    .call_handle(&mut store, &request)
                    .await;
                stats.call = called.elapsed();
                match result {
                    Ok(Ok(response)) => (Ok(Answer::Record(response)), Some(plugin)),
                    Ok(Err(error)) => (Err(InvokeError::Guest(error)), Some(plugin)),
                    Err(error) => (Err(trap(error, &store.data().log().stderr())), None),
                }
            }
            Err(error) => (Err(call_error(error, &store)), None),
        };
        let stats = self.finish(&mut store, limits, stats);
        if let Some(plugin) = sound
            && store.data().call() < limits.max_instance_reuse_count
        {
            guest.idle.put(IdleInstance {
                store,
                instance: Instance::Comb(plugin),
            });
        }
        (result, stats)
    }

    /// Readies an idle instance's store for its next call of `guest`
    /// under `invocation`: its call state anew, its clock and limits armed.
    fn ready(
        &self,
        store: &mut Store<InvocationState>,
        guest: &Guest<'_>,
        invocation: Context,
    ) -> wasmtime::Result<()> {
        let clocked = self.measure_guest_cpu || invocation.span().is_recording();
        store
            .data_mut()
            .next_call(guest, invocation, &self.reporters);
        if clocked {
            state::clock_guest(store);
        }
        self.arm(store, guest.limits)
    }

    /// A fresh store for one call of `guest` under `invocation`, its
    /// limits armed. Guest CPU time is measured for a call whose
    /// invocation span is recorded, or for every call when metrics want
    /// it (`measure_guest_cpu`); otherwise (tracing off, or sampled out)
    /// the call pays no clock read at every host call.
    fn fresh_store(
        &self,
        guest: &Guest<'_>,
        invocation: Context,
    ) -> Result<Store<InvocationState>, InvokeError> {
        let clocked = self.measure_guest_cpu || invocation.span().is_recording();
        let state = InvocationState::new(
            guest.tracer.clone(),
            invocation,
            guest.name,
            guest.sandbox,
            guest.limits,
            &self.reporters,
            guest.signals.clone(),
        );
        let mut store = self
            .store(guest.pre.engine(), state, guest.limits)
            .map_err(|error| InvokeError::Instantiate(format!("{error:#}")))?;
        store.data_mut().profile = guest.profile.clone();
        if clocked {
            state::clock_guest(&mut store);
        }
        Ok(store)
    }

    /// The store's accounting of a finished call, added to `stats`; logs
    /// what is left of the guest's unfinished output lines.
    fn finish(
        &self,
        store: &mut Store<InvocationState>,
        limits: &Limits,
        mut stats: CallStats,
    ) -> CallStats {
        store.data_mut().end_call();
        stats.instance_call = (limits.max_instance_reuse_count > 1).then(|| store.data().call());
        stats.guest_cpu = store.data().guest_clock.total();
        stats.memory_peak = store.data().limiter.peak();
        stats.log_dropped = store.data().log().dropped();
        stats.telemetry_dropped = store.data().telemetry().dropped();
        stats.telemetry_refused = store.data().telemetry().refused();
        stats.fuel_consumed = limits
            .fuel
            .filter(|_| self.fuel)
            .zip(store.get_fuel().ok())
            .map(|(given, left)| given.saturating_sub(left));
        stats
    }

    /// A store for one call under `limits`.
    fn store(
        &self,
        engine: &Engine,
        mut state: InvocationState,
        limits: &Limits,
    ) -> wasmtime::Result<Store<InvocationState>> {
        state.ticks = Some(self.ticker.ticks());
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        self.arm(&mut store, limits)?;
        Ok(store)
    }

    /// Sets the deadline and fuel of the call about to run in `store`.
    fn arm(&self, store: &mut Store<InvocationState>, limits: &Limits) -> wasmtime::Result<()> {
        // Check the deadline at every epoch tick, and yield in between; a
        // call running long gives its thread's cores to shorter ones.
        let started = Instant::now();
        let deadline = started + limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            if let Some(profile) = store.data().profile.clone() {
                profile.sample(&store);
            }
            if started.elapsed() > guest_pool::LONG_CALL {
                guest_pool::running_long();
            }
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        if let Some(fuel) = limits.fuel.filter(|_| self.fuel) {
            store.set_fuel(fuel)?;
        }
        Ok(())
    }
}

/// Removes `modules`, where wasmtime kept compiled components when it had
/// the whole cache folder, if it is that: only `wasmtime-VERSION` folders.
/// A folder of anyone else's by that name is left alone.
fn remove_old_compiled_cache(modules: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(modules) else {
        return;
    };
    let wasmtimes = entries.flatten().all(|entry| {
        entry.path().is_dir() && entry.file_name().to_string_lossy().starts_with("wasmtime-")
    });
    if wasmtimes {
        let _ = std::fs::remove_dir_all(modules);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Runtime {
        Runtime::new(&EngineConfig {
            cache_dir: None,
            max_memory_bytes: crate::limits::DEFAULT_MEMORY_BYTES,
            fuel: false,
            pooling: false,
            perf_map: false,
        })
        .unwrap()
    }

    #[test]
    fn only_wasmtimes_old_cache_folder_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old/modules");
        std::fs::create_dir_all(old.join("wasmtime-48.0.8")).unwrap();
        remove_old_compiled_cache(&old);
        assert!(!old.exists());
        let theirs = dir.path().join("theirs/modules");
        std::fs::create_dir_all(theirs.join("wasmtime-48.0.8")).unwrap();
        std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
        remove_old_compiled_cache(&theirs);
        assert!(theirs.join("notes.txt").exists());
    }

    /// Why `prepare` refused `wat`.
    fn refusal(wat: &str) -> String {
        let wasm = wat::parse_str(wat).unwrap();
        match runtime().prepare(&wasm) {
            Ok(_) => panic!("prepared"),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn a_component_importing_wasi_0_3_links_on_the_concurrent_engine() {
        // Valid without the component model's concurrency (a sync
        // function), but only the second engine's linker has WASI 0.3: it
        // links there, and then fails only for lacking comb's exports.
        let reason = refusal(
            r#"(component
                (import "wasi:random/random@0.3.0"
                    (instance (export "get-random-u64" (func (result u64))))))"#,
        );
        assert!(reason.contains("the component exports nothing"), "{reason}");
        // An import comb has on neither engine is the component's own
        // failure, named.
        let reason = refusal(
            r#"(component
                (import "example:nope/thing@1.0.0"
                    (instance (export "f" (func)))))"#,
        );
        assert!(reason.contains("example:nope/thing@1.0.0"), "{reason}");
    }
}
