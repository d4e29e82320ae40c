//! `wasi:otel/metrics`: what a guest's own OpenTelemetry SDK measured,
//! recorded with comb's meter (the pipeline comb's own metrics take) under
//! the plugin's identity.
//!
//! A guest's SDK exports its readings (`export`) as points of its
//! instruments, already aggregated; comb re-records each point through an
//! instrument of its own of the same name, unit and kind, with the guest's
//! attributes plus `plugin.name` and `plugin.version`:
//!
//! - a monotonic sum becomes a counter, a non-monotonic one an up-down
//!   counter, a gauge a gauge;
//! - temporality: a delta point is added as it is; a cumulative one is
//!   what the guest counted since its instance started, so comb adds what
//!   it grew by since the same instance last exported it. With a fresh
//!   instance per request (comb's default) that is the whole value: every
//!   call's instance starts from zero. A reused instance's earlier values
//!   are kept with the instance (bounded), so nothing is counted twice;
//! - histograms (plain and exponential) cannot be re-recorded through the
//!   OpenTelemetry API without inventing the values behind their buckets:
//!   they are dropped and counted (`plugin.telemetry.dropped`).
//!
//! Bounded: [`MAX_INSTRUMENTS`] instruments per plugin (comb's meter keeps
//! every instrument it ever made), [`MAX_POINTS_PER_CALL`] points per call,
//! [`MAX_SERIES_PER_INSTANCE`] cumulative series per instance, and the
//! call's telemetry bytes for names and attributes; past them, points are
//! dropped and counted. comb's keys (`plugin.*`, `faas.*`) and metric
//! names in comb's namespaces (`faas.*`, `http.server.*`, `comb.*`,
//! `plugin.*`) are refused.

use std::{collections::HashMap, sync::Mutex};

use opentelemetry::{
    InstrumentationScope, KeyValue, StringValue, global,
    metrics::{Counter, Gauge, Meter, UpDownCounter},
};

use super::{
    bindings::otel::metrics::{self as wit, MetricData, MetricNumber, Temporality},
    budget::{self, Budget, ITEM_COST},
};
use crate::spans::attributes;

/// The namespaces of comb's own metrics (`metrics.rs`): a guest's metric
/// named in one is refused.
const COMB_METRIC_PREFIXES: [&str; 4] = ["faas.", "http.server.", "comb.", "plugin."];

/// Instruments one plugin may have comb make for it.
pub(crate) const MAX_INSTRUMENTS: usize = 64;

/// Points one call may export.
pub(crate) const MAX_POINTS_PER_CALL: usize = 1024;

/// Cumulative series a reused instance's earlier values are kept for.
pub(crate) const MAX_SERIES_PER_INSTANCE: usize = 1024;

/// One plugin's instruments in comb's meter; shared by its calls.
pub(crate) struct GuestMeter {
    meter: Meter,
    identity: [KeyValue; 2],
    instruments: Mutex<HashMap<(String, Kind), Instrument>>,
}

/// What a point is recorded as.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Counter,
    UpDownCounter,
    Gauge,
}

#[derive(Clone)]
enum Instrument {
    Counter(Counter<f64>),
    UpDownCounter(UpDownCounter<f64>),
    Gauge(Gauge<f64>),
}

impl GuestMeter {
    /// Instruments for the plugin `name` at `version`, in comb's meter
    /// under a scope named after the plugin.
    pub(crate) fn new(name: &StringValue, version: &StringValue) -> Self {
        let scope = InstrumentationScope::builder(name.to_string())
            .with_version(version.to_string())
            .build();
        GuestMeter {
            meter: global::meter_with_scope(scope),
            identity: [
                KeyValue::new(attributes::PLUGIN_NAME, name.clone()),
                KeyValue::new(attributes::PLUGIN_VERSION, version.clone()),
            ],
            instruments: Mutex::default(),
        }
    }

    /// The instrument `name` of `kind`, made on first use (with `unit` and
    /// `description`); `None` past [`MAX_INSTRUMENTS`].
    fn instrument(
        &self,
        name: &str,
        unit: String,
        description: String,
        kind: Kind,
    ) -> Option<Instrument> {
        let mut instruments = self.instruments.lock().unwrap_or_else(|e| e.into_inner());
        let key = (name.to_owned(), kind);
        if let Some(instrument) = instruments.get(&key) {
            return Some(instrument.clone());
        }
        if instruments.len() >= MAX_INSTRUMENTS {
            return None;
        }
        let name = name.to_owned();
        let instrument = match kind {
            Kind::Counter => Instrument::Counter(
                (self.meter.f64_counter(name))
                    .with_unit(unit)
                    .with_description(description)
                    .build(),
            ),
            Kind::UpDownCounter => Instrument::UpDownCounter(
                (self.meter.f64_up_down_counter(name))
                    .with_unit(unit)
                    .with_description(description)
                    .build(),
            ),
            Kind::Gauge => Instrument::Gauge(
                (self.meter.f64_gauge(name))
                    .with_unit(unit)
                    .with_description(description)
                    .build(),
            ),
        };
        instruments.insert(key, instrument.clone());
        Some(instrument)
    }
}

/// A series of a cumulative sum: its instrument and attributes, as the
/// guest sent them.
type Series = (String, Vec<(String, String)>);

/// A reused instance's last cumulative values, so a later export adds only
/// what grew. Kept with the instance's store, across its calls.
#[derive(Default)]
pub(crate) struct Cumulative(HashMap<Series, f64>);

/// Records one export of the guest's metrics; counts what it drops and
/// refuses in `budget`. `points` is what the call has exported so far.
pub(crate) fn record(
    meter: &GuestMeter,
    metrics: wit::ResourceMetrics,
    budget: &mut Budget,
    points: &mut usize,
    cumulative: &mut Cumulative,
) {
    for scope in metrics.scope_metrics {
        for metric in scope.metrics {
            record_metric(meter, metric, budget, points, cumulative);
        }
    }
}

fn record_metric(
    meter: &GuestMeter,
    metric: wit::Metric,
    budget: &mut Budget,
    points: &mut usize,
    cumulative: &mut Cumulative,
) {
    let wit::Metric {
        name,
        description,
        unit,
        data,
    } = metric;
    // comb's own metrics' names are comb's: a guest's `faas.invoke_duration`
    // would merge into comb's in any backend that groups by name.
    if COMB_METRIC_PREFIXES
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        budget.refused += 1;
        return;
    }
    let (name, unit, description) = (budget.cut(name), budget.cut(unit), budget.cut(description));
    if !budget.spend(name.len() + unit.len() + description.len() + ITEM_COST) {
        return;
    }
    let (kind, temporality, data_points) = match data {
        MetricData::F64Sum(sum) | MetricData::U64Sum(sum) | MetricData::S64Sum(sum) => {
            let kind = if sum.is_monotonic {
                Kind::Counter
            } else {
                Kind::UpDownCounter
            };
            let points = (sum.data_points.into_iter())
                .map(|p| (p.attributes, p.value))
                .collect::<Vec<_>>();
            (kind, Some(sum.temporality), points)
        }
        MetricData::F64Gauge(gauge) | MetricData::U64Gauge(gauge) | MetricData::S64Gauge(gauge) => {
            let points = (gauge.data_points.into_iter())
                .map(|p| (p.attributes, p.value))
                .collect::<Vec<_>>();
            (Kind::Gauge, None, points)
        }
        MetricData::F64Histogram(h) | MetricData::U64Histogram(h) | MetricData::S64Histogram(h) => {
            budget.dropped += h.data_points.len() as u64;
            return;
        }
        MetricData::F64ExponentialHistogram(h)
        | MetricData::U64ExponentialHistogram(h)
        | MetricData::S64ExponentialHistogram(h) => {
            budget.dropped += h.data_points.len() as u64;
            return;
        }
    };
    let Some(instrument) = meter.instrument(&name, unit, description, kind) else {
        budget.dropped += data_points.len() as u64;
        return;
    };
    for (guest_attributes, value) in data_points {
        if *points >= MAX_POINTS_PER_CALL {
            budget.dropped += 1;
            continue;
        }
        *points += 1;
        let series: Vec<(String, String)> = (guest_attributes.iter())
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect();
        let mut attributes = budget::json_attributes(
            guest_attributes.into_iter().map(|kv| (kv.key, kv.value)),
            budget,
        );
        attributes.extend(meter.identity.iter().cloned());
        let value = number(value);
        // What to add: a cumulative sum's growth since this instance last
        // sent the series (a low-memory sum is cumulative only when it is
        // not monotonic, as OpenTelemetry's LowMemory temporality says).
        let cumulative_sum = matches!(
            (kind, temporality),
            (Kind::Counter, Some(Temporality::Cumulative))
                | (
                    Kind::UpDownCounter,
                    Some(Temporality::Cumulative | Temporality::LowMemory)
                )
        );
        let value = if cumulative_sum {
            let series = (name.clone(), series);
            let seen = cumulative.0.len();
            match cumulative.0.get_mut(&series) {
                Some(last) => {
                    let grown = value - *last;
                    *last = value;
                    // A smaller total is a reset: the instance started over.
                    if grown < 0.0 && kind == Kind::Counter {
                        value
                    } else {
                        grown
                    }
                }
                None if seen < MAX_SERIES_PER_INSTANCE => {
                    cumulative.0.insert(series, value);
                    value
                }
                None => {
                    budget.dropped += 1;
                    continue;
                }
            }
        } else {
            value
        };
        match &instrument {
            Instrument::Counter(counter) if value >= 0.0 => counter.add(value, &attributes),
            Instrument::Counter(_) => budget.dropped += 1,
            Instrument::UpDownCounter(counter) => counter.add(value, &attributes),
            Instrument::Gauge(gauge) => gauge.record(value, &attributes),
        }
    }
}

fn number(value: MetricNumber) -> f64 {
    match value {
        MetricNumber::F64(f) => f,
        MetricNumber::S64(i) => i as f64,
        MetricNumber::U64(u) => u as f64,
    }
}
