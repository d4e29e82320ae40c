//! What comb's page shows, aggregated from ended spans: recent traces
//! (slow and failed ones kept longer) and per-plugin, per-route latency in
//! time buckets. Owned by the recorder's thread; readers take a snapshot.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use opentelemetry::{
    Value,
    trace::{SpanKind, Status, TraceId},
};
use opentelemetry_sdk::trace::SpanData;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::spans::attributes;

/// The width of one latency bucket.
pub const BUCKET: Duration = Duration::from_secs(10);

/// How far back latency is kept: the longest window the page offers.
pub const RETENTION: Duration = Duration::from_secs(15 * 60);

/// Spans kept per trace; a plugin opening spans in a loop cannot grow one
/// trace without bound.
const MAX_SPANS_PER_TRACE: usize = 512;

/// Latencies are recorded in units of 10 µs up to 60 s, to two
/// significant digits: about 8 KiB per bucket and route.
const LATENCY_UNIT_MICROS: u64 = 10;
const LATENCY_MAX_UNITS: u64 = 6_000_000;

/// How many traces are kept in memory.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// The most recent traces.
    pub recent: usize,
    /// Failed and slow traces, kept apart so a burst of fast, healthy
    /// requests does not push them out.
    pub kept: usize,
}

/// The aggregate state.
pub struct Store {
    capacity: Capacity,
    /// Spans of traces whose server span has not ended yet.
    pending: HashMap<TraceId, Vec<SpanData>>,
    /// Arrival order of `pending`, to evict the oldest when full.
    pending_order: VecDeque<TraceId>,
    recent: VecDeque<Arc<Trace>>,
    kept: VecDeque<Arc<Trace>>,
    /// (plugin, route) → its latency over time.
    series: BTreeMap<(String, String), Series>,
}

/// A finished request's trace as recorded: the spans as the SDK ended
/// them. Turned into a [`TraceView`] only when someone asks for it.
pub struct Trace {
    /// The numbers shown in the list.
    pub summary: TraceSummary,
    spans: Vec<SpanData>,
}

/// One route's buckets, oldest first, and when a trace counts as slow.
#[derive(Default)]
struct Series {
    buckets: VecDeque<Bucket>,
    /// The route's p95 over the last minute, and the second it was
    /// computed at: recomputed at most once a second, not per request.
    slow_over_ms: Option<f64>,
    slow_computed_at: u64,
}

struct Bucket {
    /// Start, in seconds since the epoch; a multiple of [`BUCKET`].
    start: u64,
    stats: Stats,
}

/// Counts and a latency histogram, mergeable.
#[derive(Clone)]
struct Stats {
    requests: u64,
    errors: u64,
    coldstarts: u64,
    latency: Histogram<u32>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            requests: 0,
            errors: 0,
            coldstarts: 0,
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_UNITS, 2)
                .expect("valid histogram bounds"),
        }
    }

    fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.coldstarts += other.coldstarts;
        // Same bounds on both sides, so this cannot fail.
        let _ = self.latency.add(&other.latency);
    }

    fn summary(&self) -> Summary {
        let quantile = |q: f64| {
            (self.requests > 0)
                .then(|| (self.latency.value_at_quantile(q) * LATENCY_UNIT_MICROS) as f64 / 1000.0)
        };
        Summary {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            coldstarts: self.coldstarts,
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

/// Counts and percentiles over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with a 5xx.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// First calls after a load.
    pub coldstarts: u64,
    /// Median latency, server span start to end.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
}

/// One plugin's row: its summary and one per route.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStats {
    /// `plugin.name`.
    pub plugin: String,
    /// Over all its routes.
    #[serde(flatten)]
    pub summary: Summary,
    /// Per route pattern.
    pub routes: Vec<RouteStats>,
    /// One point per bucket in the window, oldest first.
    pub series: Vec<Point>,
}

/// One route's row.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStats {
    /// `http.route`.
    pub route: String,
    /// Its numbers.
    #[serde(flatten)]
    pub summary: Summary,
}

/// One bucket of a plugin's latency over time.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Bucket start, seconds since the epoch.
    pub t: u64,
    /// Requests in the bucket.
    pub requests: u64,
    /// Median latency in the bucket.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in the bucket.
    pub p95_ms: Option<f64>,
}

/// A trace in the list: everything but its spans.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    /// Hex trace id.
    pub trace_id: String,
    /// Start, milliseconds since the epoch.
    pub start_ms: f64,
    /// The server span's duration.
    pub duration_ms: f64,
    /// `plugin.name`.
    pub plugin: String,
    /// `http.route`.
    pub route: String,
    /// `http.request.method`.
    pub method: String,
    /// `http.response.status_code`.
    pub status: i64,
    /// Answered with a 5xx or a span in error.
    pub failed: bool,
    /// Why it is kept beyond the recent ones: `failed` or `slow`.
    pub kept: Option<&'static str>,
    /// How many spans it has.
    pub span_count: usize,
}

/// A finished request's trace, ready to serve as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TraceView {
    /// The list's numbers.
    #[serde(flatten)]
    pub summary: TraceSummary,
    /// Every span, by start time.
    pub spans: Vec<SpanView>,
}

/// One span of a [`TraceView`].
#[derive(Debug, Clone, Serialize)]
pub struct SpanView {
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `server`, `internal`, `client`…
    pub kind: &'static str,
    /// Start, from the trace's start.
    pub offset_ms: f64,
    /// Duration.
    pub duration_ms: f64,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
    /// The error description, if any.
    pub status_message: String,
    /// Attributes, typed as recorded.
    pub attributes: Map<String, Json>,
    /// Events with their attributes.
    pub events: Vec<EventView>,
}

/// One event of a [`SpanView`].
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// The event's name (`exception`…).
    pub name: String,
    /// From the trace's start.
    pub offset_ms: f64,
    /// Attributes.
    pub attributes: Map<String, Json>,
}

impl Store {
    /// An empty store keeping `capacity` traces.
    pub fn new(capacity: Capacity) -> Self {
        Store {
            capacity,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            recent: VecDeque::new(),
            kept: VecDeque::new(),
            series: BTreeMap::new(),
        }
    }

    /// Takes one ended span. Children end before their parents, so a
    /// request's trace is complete when its server span arrives.
    pub fn add(&mut self, span: SpanData) {
        let trace_id = span.span_context.trace_id();
        if span.span_kind != SpanKind::Server {
            let spans = self.pending.entry(trace_id).or_insert_with(|| {
                self.pending_order.push_back(trace_id);
                Vec::new()
            });
            if spans.len() < MAX_SPANS_PER_TRACE {
                spans.push(span);
            }
            // Traces that never get a server span (plugin loads, or a
            // request whose server span was dropped) age out here.
            while self.pending_order.len() > 4 * self.capacity.recent.max(16) {
                if let Some(oldest) = self.pending_order.pop_front() {
                    self.pending.remove(&oldest);
                }
            }
            return;
        }
        let mut spans = self.pending.remove(&trace_id).unwrap_or_default();
        self.pending_order.retain(|id| *id != trace_id);
        spans.push(span);
        if let Some(trace) = self.finish(spans) {
            self.keep(trace);
        }
    }

    /// Records a complete trace's numbers; returns it to keep.
    fn finish(&mut self, spans: Vec<SpanData>) -> Option<Trace> {
        let root = spans.last()?;
        let plugin = string_attribute(root, attributes::PLUGIN_NAME)?;
        let route = string_attribute(root, attributes::HTTP_ROUTE).unwrap_or_default();
        let status = int_attribute(root, attributes::HTTP_RESPONSE_STATUS_CODE).unwrap_or(0);
        let failed = status >= 500
            || spans
                .iter()
                .any(|s| matches!(s.status, Status::Error { .. }));
        let coldstart = spans.iter().any(|s| {
            s.attributes.iter().any(|kv| {
                kv.key.as_str() == attributes::FAAS_COLDSTART && kv.value == Value::Bool(true)
            })
        });
        let start = root.start_time;
        let duration = root.end_time.duration_since(start).unwrap_or_default();
        let summary = TraceSummary {
            trace_id: root.span_context.trace_id().to_string(),
            start_ms: epoch_millis(start),
            duration_ms: millis(duration),
            method: string_attribute(root, attributes::HTTP_REQUEST_METHOD).unwrap_or_default(),
            status,
            failed,
            kept: None,
            span_count: spans.len(),
            plugin,
            route,
        };
        let slow = self.record(&summary, epoch_secs(root.end_time), coldstart);
        Some(Trace {
            summary: TraceSummary {
                kept: if failed {
                    Some("failed")
                } else if slow {
                    Some("slow")
                } else {
                    None
                },
                ..summary
            },
            spans,
        })
    }

    /// Adds one request to its route's bucket; returns whether it was
    /// slower than the route's recent p95.
    fn record(&mut self, trace: &TraceSummary, at: u64, coldstart: bool) -> bool {
        let series = self
            .series
            .entry((trace.plugin.clone(), trace.route.clone()))
            .or_default();
        if series.slow_computed_at != at {
            let since = at.saturating_sub(60);
            let recent = merged(series.buckets.iter().filter(|b| b.start >= since));
            series.slow_over_ms = (recent.requests >= 20)
                .then(|| recent.summary().p95_ms)
                .flatten();
            series.slow_computed_at = at;
        }
        let start = at - at % BUCKET.as_secs();
        if series.buckets.back().is_none_or(|last| last.start != start) {
            series.buckets.push_back(Bucket {
                start,
                stats: Stats::new(),
            });
        }
        let oldest = start.saturating_sub(RETENTION.as_secs());
        while series.buckets.front().is_some_and(|b| b.start < oldest) {
            series.buckets.pop_front();
        }
        let stats = &mut series.buckets.back_mut().expect("pushed above").stats;
        stats.requests += 1;
        stats.errors += u64::from(trace.failed);
        stats.coldstarts += u64::from(coldstart);
        let units = (trace.duration_ms * 1000.0) as u64 / LATENCY_UNIT_MICROS;
        stats.latency.saturating_record(units.max(1));
        series
            .slow_over_ms
            .is_some_and(|p95| trace.duration_ms > p95)
    }

    fn keep(&mut self, trace: Trace) {
        let trace = Arc::new(trace);
        if trace.summary.kept.is_some() {
            push_bounded(&mut self.kept, trace.clone(), self.capacity.kept);
        }
        push_bounded(&mut self.recent, trace, self.capacity.recent);
    }

    /// Per-plugin and per-route numbers over the last `window`, plugins by
    /// name.
    pub fn stats(&self, window: Duration) -> Vec<PluginStats> {
        let now = epoch_secs(SystemTime::now());
        let since = now.saturating_sub(window.as_secs());
        /// One plugin's numbers while its routes are added up.
        #[derive(Default)]
        struct Sums {
            total: Option<Stats>,
            routes: Vec<RouteStats>,
            points: BTreeMap<u64, Stats>,
        }
        let mut plugins: BTreeMap<&str, Sums> = BTreeMap::new();
        for ((plugin, route), series) in &self.series {
            let in_window = || {
                series
                    .buckets
                    .iter()
                    .filter(|b| b.start + BUCKET.as_secs() > since)
            };
            let route_stats = merged(in_window());
            if route_stats.requests == 0 {
                continue;
            }
            let sums = plugins.entry(plugin).or_default();
            sums.total.get_or_insert_with(Stats::new).add(&route_stats);
            sums.routes.push(RouteStats {
                route: route.clone(),
                summary: route_stats.summary(),
            });
            for bucket in in_window() {
                sums.points
                    .entry(bucket.start)
                    .or_insert_with(Stats::new)
                    .add(&bucket.stats);
            }
        }
        plugins
            .into_iter()
            .map(|(plugin, sums)| PluginStats {
                plugin: plugin.to_owned(),
                summary: sums.total.unwrap_or_else(Stats::new).summary(),
                routes: sums.routes,
                series: sums
                    .points
                    .into_iter()
                    .map(|(t, stats)| {
                        let summary = stats.summary();
                        Point {
                            t,
                            requests: summary.requests,
                            p50_ms: summary.p50_ms,
                            p95_ms: summary.p95_ms,
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Traces, newest first: the kept (slow, failed) and the recent ones,
    /// each once, optionally only one plugin's or one route's.
    pub fn traces(&self, plugin: Option<&str>, route: Option<&str>) -> Vec<TraceSummary> {
        let mut traces: Vec<&TraceSummary> = self
            .recent
            .iter()
            .chain(&self.kept)
            .map(|t| &t.summary)
            .filter(|t| plugin.is_none_or(|p| t.plugin == p))
            .filter(|t| route.is_none_or(|r| t.route == r))
            .collect();
        traces.sort_by(|a, b| b.start_ms.total_cmp(&a.start_ms));
        traces.dedup_by(|a, b| a.trace_id == b.trace_id);
        traces.into_iter().cloned().collect()
    }

    /// One trace by its hex id, with every span.
    pub fn trace(&self, trace_id: &str) -> Option<Arc<Trace>> {
        self.recent
            .iter()
            .chain(&self.kept)
            .find(|t| t.summary.trace_id == trace_id)
            .cloned()
    }
}

impl Trace {
    /// The trace as JSON-ready views, spans by start time. Built on
    /// request, outside the store's lock.
    pub fn view(&self) -> TraceView {
        let start = self.spans.last().map_or(UNIX_EPOCH, |root| root.start_time);
        let mut spans: Vec<SpanView> = self.spans.iter().map(|s| span_view(s, start)).collect();
        spans.sort_by(|a, b| a.offset_ms.total_cmp(&b.offset_ms));
        TraceView {
            summary: self.summary.clone(),
            spans,
        }
    }
}

fn merged<'a>(buckets: impl Iterator<Item = &'a Bucket>) -> Stats {
    buckets.fold(Stats::new(), |mut total, bucket| {
        total.add(&bucket.stats);
        total
    })
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, capacity: usize) {
    if capacity == 0 {
        return;
    }
    if queue.len() == capacity {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn span_view(span: &SpanData, trace_start: SystemTime) -> SpanView {
    let offset = |time: SystemTime| millis(time.duration_since(trace_start).unwrap_or_default());
    let (status, status_message) = match &span.status {
        Status::Unset => ("unset", String::new()),
        Status::Ok => ("ok", String::new()),
        Status::Error { description } => ("error", description.to_string()),
    };
    SpanView {
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: if span.parent_span_id == opentelemetry::trace::SpanId::INVALID {
            String::new()
        } else {
            span.parent_span_id.to_string()
        },
        name: span.name.to_string(),
        kind: match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        offset_ms: offset(span.start_time),
        duration_ms: millis(
            span.end_time
                .duration_since(span.start_time)
                .unwrap_or_default(),
        ),
        status,
        status_message,
        attributes: json_attributes(&span.attributes),
        events: span
            .events
            .iter()
            .map(|event| EventView {
                name: event.name.to_string(),
                offset_ms: offset(event.timestamp),
                attributes: json_attributes(&event.attributes),
            })
            .collect(),
    }
}

fn json_attributes(attributes: &[opentelemetry::KeyValue]) -> Map<String, Json> {
    attributes
        .iter()
        .map(|kv| (kv.key.to_string(), json_value(&kv.value)))
        .collect()
}

fn json_value(value: &Value) -> Json {
    use opentelemetry::Array;
    match value {
        Value::Bool(v) => Json::from(*v),
        Value::I64(v) => Json::from(*v),
        Value::F64(v) => Json::from(*v),
        Value::String(v) => Json::from(v.as_str()),
        Value::Array(Array::Bool(v)) => Json::from(v.clone()),
        Value::Array(Array::I64(v)) => Json::from(v.clone()),
        Value::Array(Array::F64(v)) => Json::from(v.clone()),
        Value::Array(Array::String(v)) => {
            Json::from(v.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>())
        }
        other => Json::from(other.to_string()),
    }
}

fn string_attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn int_attribute(span: &SpanData, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match kv.value {
            Value::I64(v) => Some(v),
            _ => None,
        })
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn epoch_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn epoch_millis(time: SystemTime) -> f64 {
    millis(time.duration_since(UNIX_EPOCH).unwrap_or_default())
}
