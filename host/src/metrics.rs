//! comb's metric model: which instruments exist, their names, units and
//! attributes. Semantic-convention names where they exist (HTTP server,
//! FaaS), `comb.*` otherwise:
//!
//! ```text
//! http.server.request.duration  histogram s  method, route, status, plugin.name, error.type
//! faas.invoke_duration          histogram s  plugin.name, plugin.version, faas.trigger, error.type
//! faas.init_duration            histogram s  plugin.name, plugin.version (instantiation)
//! faas.coldstarts               counter      plugin.name, plugin.version (first call after a load)
//! faas.errors                   counter      plugin.name, plugin.version, error.type
//! faas.cpu_usage                histogram s  plugin.name, plugin.version, faas.trigger, error.type (guest CPU)
//! faas.mem_usage                histogram By plugin.name, plugin.version, faas.trigger, error.type (peak memory)
//! comb.plugin.loads             counter      plugin.load.outcome (loaded / rejected)
//! ```
//!
//! Attributes stay low-cardinality — route patterns, never paths; plugin
//! name and version, never instance, request or trace ids — so one
//! Honeycomb query groups plugins side by side.

use std::{sync::Arc, time::Duration};

use opentelemetry::{
    KeyValue, StringValue, global,
    metrics::{Counter, Histogram},
};
use opentelemetry_semantic_conventions::metric::{
    FAAS_COLDSTARTS, FAAS_CPU_USAGE, FAAS_ERRORS, FAAS_INIT_DURATION, FAAS_INVOKE_DURATION,
    FAAS_MEM_USAGE, HTTP_SERVER_REQUEST_DURATION,
};

use crate::spans::{PluginIdentity, attributes};

/// The instrumentation scope of comb's instruments.
pub(crate) const METER_NAME: &str = "comb";

/// The name of the plugin-load counter.
pub(crate) const PLUGIN_LOADS: &str = "comb.plugin.loads";

/// The bucket boundaries semantic conventions advise for durations in
/// seconds (`http.server.request.duration`).
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets for a call's guest CPU time, in seconds: a plugin's handler
/// takes tens of microseconds, an interpreter's milliseconds.
const CPU_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 5.0,
];

/// Buckets for a call's peak linear memory, in bytes: 64 KiB pages, from
/// one page to the 4 GiB a 32-bit memory may hold.
const MEMORY_BUCKETS: [f64; 14] = [
    65_536.0,
    131_072.0,
    262_144.0,
    524_288.0,
    1_048_576.0,
    2_097_152.0,
    4_194_304.0,
    8_388_608.0,
    16_777_216.0,
    33_554_432.0,
    67_108_864.0,
    134_217_728.0,
    536_870_912.0,
    4_294_967_296.0,
];

/// What one plugin call used, as [`Metrics::record_invocation`] records it.
pub(crate) struct Usage {
    /// Instantiating the component for the call.
    pub instantiate: Duration,
    /// The call in all: instantiation and the guest's handler.
    pub total: Duration,
    /// Time executing guest code.
    pub guest_cpu: Duration,
    /// The most linear memory the instance held, in bytes.
    pub memory_peak: usize,
}

/// comb's instruments, from the global meter provider (a no-op one unless
/// metrics are exported). Cheap to clone.
#[derive(Clone)]
pub struct Metrics(Option<Instruments>);

#[derive(Clone)]
struct Instruments {
    request_duration: Histogram<f64>,
    invoke_duration: Histogram<f64>,
    init_duration: Histogram<f64>,
    cpu_usage: Histogram<f64>,
    mem_usage: Histogram<u64>,
    coldstarts: Counter<u64>,
    errors: Counter<u64>,
    loads: Counter<u64>,
}

/// One answered request, as [`Metrics::record_request`] records it.
pub(crate) struct AnsweredRequest<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The matched route pattern, if any (shared, not copied).
    pub route: Option<&'a Arc<str>>,
    /// The plugin that served it, if any.
    pub plugin: Option<&'a PluginIdentity>,
    /// The response status.
    pub status: http::StatusCode,
    /// The failure's `error.type`, if it failed.
    pub error_type: Option<&'a str>,
    /// From the request's arrival to its response.
    pub duration: Duration,
}

impl Metrics {
    /// No metrics: nothing recorded, and no attribute sets built for the
    /// no-op meter to drop. For when metrics are not exported.
    pub fn off() -> Self {
        Metrics(None)
    }

    /// Creates the instruments on the current global meter provider.
    pub fn new() -> Self {
        let meter = global::meter(METER_NAME);
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        Metrics(Some(Instruments {
            request_duration: seconds(
                HTTP_SERVER_REQUEST_DURATION,
                "Duration of HTTP server requests.",
            ),
            invoke_duration: seconds(
                FAAS_INVOKE_DURATION,
                "Duration of plugin calls: instantiation and the guest's handler.",
            ),
            init_duration: seconds(
                FAAS_INIT_DURATION,
                "Time to instantiate a plugin for a call.",
            ),
            cpu_usage: meter
                .f64_histogram(FAAS_CPU_USAGE)
                .with_unit("s")
                .with_description("Guest CPU time per plugin call, host calls excluded.")
                .with_boundaries(CPU_BUCKETS.to_vec())
                .build(),
            mem_usage: meter
                .u64_histogram(FAAS_MEM_USAGE)
                .with_unit("By")
                .with_description("Peak linear memory per plugin call.")
                .with_boundaries(MEMORY_BUCKETS.to_vec())
                .build(),
            coldstarts: meter
                .u64_counter(FAAS_COLDSTARTS)
                .with_unit("{coldstart}")
                .with_description("First calls to a plugin after it was loaded.")
                .build(),
            errors: meter
                .u64_counter(FAAS_ERRORS)
                .with_unit("{error}")
                .with_description("Plugin calls that failed, by error.type.")
                .build(),
            loads: meter
                .u64_counter(PLUGIN_LOADS)
                .with_unit("{load}")
                .with_description("Plugin files loaded or rejected.")
                .build(),
        }))
    }

    /// Records one answered request.
    pub(crate) fn record_request(&self, request: &AnsweredRequest<'_>) {
        let Some(instruments) = &self.0 else { return };
        let mut attributes = vec![
            KeyValue::new(
                attributes::HTTP_REQUEST_METHOD,
                crate::spans::known_method(request.method),
            ),
            KeyValue::new(
                attributes::HTTP_RESPONSE_STATUS_CODE,
                i64::from(request.status.as_u16()),
            ),
            KeyValue::new(attributes::URL_SCHEME, "http"),
        ];
        if let Some(route) = request.route {
            attributes.push(KeyValue::new(
                attributes::HTTP_ROUTE,
                StringValue::from(route.clone()),
            ));
        }
        if let Some(plugin) = request.plugin {
            attributes.push(KeyValue::new(attributes::PLUGIN_NAME, plugin.name.clone()));
        }
        if let Some(error_type) = request.error_type {
            attributes.push(KeyValue::new(attributes::ERROR_TYPE, error_type.to_owned()));
        }
        instruments
            .request_duration
            .record(request.duration.as_secs_f64(), &attributes);
    }

    /// Records one plugin call: its duration, instantiation time, guest
    /// CPU and peak memory, a cold start and a failure's `error.type`.
    pub(crate) fn record_invocation(
        &self,
        plugin: &PluginIdentity,
        coldstart: bool,
        usage: &Usage,
        error_type: Option<&str>,
    ) {
        let Usage {
            instantiate,
            total,
            guest_cpu,
            memory_peak,
        } = *usage;
        let Some(instruments) = &self.0 else { return };
        // Built at load: a successful call allocates no attribute set.
        let call = &plugin.call_metric_attributes;
        let identity = &call[..2];
        instruments
            .init_duration
            .record(instantiate.as_secs_f64(), identity);
        if coldstart {
            instruments.coldstarts.add(1, identity);
        }
        let failed;
        let attributes = match error_type {
            None => call.as_slice(),
            Some(error_type) => {
                let mut with_error = call.to_vec();
                with_error.push(KeyValue::new(attributes::ERROR_TYPE, error_type.to_owned()));
                failed = with_error;
                instruments.errors.add(1, &failed);
                &failed
            }
        };
        instruments
            .invoke_duration
            .record(total.as_secs_f64(), attributes);
        instruments
            .cpu_usage
            .record(guest_cpu.as_secs_f64(), attributes);
        instruments.mem_usage.record(memory_peak as u64, attributes);
    }

    /// Records one plugin file loaded (`true`) or rejected.
    pub(crate) fn record_load(&self, loaded: bool) {
        let Some(instruments) = &self.0 else { return };
        let outcome = if loaded { "loaded" } else { "rejected" };
        instruments.loads.add(
            1,
            &[KeyValue::new(attributes::PLUGIN_LOAD_OUTCOME, outcome)],
        );
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
