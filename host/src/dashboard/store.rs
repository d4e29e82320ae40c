//! What comb's page shows, aggregated from ended spans: recent traces
//! (slow and failed ones kept longer) and per-plugin, per-route latency in
//! time buckets. Written on the span pipeline's thread; readers take a
//! snapshot.

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

pub(crate) use super::views::{
    PluginStats, Point, RouteStats, SpanView, Summary, TraceSummary, TraceView, VersionStats,
};
use super::{
    compare::{self, Comparison},
    views::span_view,
};
use crate::spans::{attributes, millis};

/// The width of one latency bucket.
pub(crate) const BUCKET: Duration = Duration::from_secs(10);

/// How far back latency is kept: the longest window the page offers.
pub(crate) const RETENTION: Duration = Duration::from_secs(15 * 60);

/// Spans kept per trace; a plugin opening spans in a loop cannot grow one
/// trace without bound.
const MAX_SPANS_PER_TRACE: usize = 512;

/// Latencies are recorded in units of 10 µs up to 60 s, to two
/// significant digits: about 8 KiB per bucket and route.
const LATENCY_UNIT_MICROS: u64 = 10;
const LATENCY_MAX_UNITS: u64 = 6_000_000;

/// A call's peak linear memory in KiB, up to 64 GiB (wasm64's reach is
/// larger, comb's memory limit far smaller), to two significant digits.
const MEMORY_MAX_KIB: u64 = 64 * 1024 * 1024;

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
pub(crate) struct Store {
    capacity: Capacity,
    /// Spans of traces whose server span has not ended yet.
    pending: HashMap<TraceId, Vec<Arc<SpanData>>>,
    /// Arrival order of `pending`, to evict the oldest when full.
    pending_order: VecDeque<TraceId>,
    recent: VecDeque<Arc<Trace>>,
    kept: VecDeque<Arc<Trace>>,
    /// (plugin, route, build) → its latency over time; a build is a
    /// version and its digest's start, so two builds of one version (a
    /// canary not yet renumbered) stay apart.
    series: BTreeMap<(String, String, String), Series>,
    /// When series with nothing left in [`RETENTION`] were last dropped.
    pruned_at: u64,
}

/// A finished request's trace as recorded: the spans as the SDK ended
/// them. Turned into a [`TraceView`] only when someone asks for it.
pub(crate) struct Trace {
    /// The numbers shown in the list.
    pub summary: TraceSummary,
    spans: Vec<Arc<SpanData>>,
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

/// Counts and histograms of latency and of the guest's CPU time and peak
/// memory per call, mergeable.
#[derive(Clone)]
struct Stats {
    requests: u64,
    errors: u64,
    coldstarts: u64,
    latency: Histogram<u32>,
    /// Guest CPU per call, in the latency's units; only calls that reached
    /// a guest (a 404 or a refused request has none) are counted.
    cpu: Histogram<u32>,
    /// Peak linear memory per call, in KiB; the same calls.
    memory: Histogram<u32>,
}

/// What a request's guest call used, from its invocation span.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_ms: f64,
    memory_bytes: i64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            requests: 0,
            errors: 0,
            coldstarts: 0,
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_UNITS, 2)
                .expect("valid histogram bounds"),
            cpu: Histogram::new_with_bounds(1, LATENCY_MAX_UNITS, 2)
                .expect("valid histogram bounds"),
            memory: Histogram::new_with_bounds(1, MEMORY_MAX_KIB, 2)
                .expect("valid histogram bounds"),
        }
    }

    fn add(&mut self, other: &Stats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.coldstarts += other.coldstarts;
        // Same bounds on both sides, so these cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.cpu.add(&other.cpu);
        let _ = self.memory.add(&other.memory);
    }

    /// What a comparison of versions reads.
    fn sample(&self) -> compare::Sample<'_> {
        let ms = LATENCY_UNIT_MICROS as f64 / 1000.0;
        compare::Sample {
            requests: self.requests,
            errors: self.errors,
            latency: (&self.latency, ms),
            cpu: (&self.cpu, ms),
            memory: (&self.memory, 1.0 / 1024.0),
        }
    }

    fn summary(&self) -> Summary {
        let quantile = |histogram: &Histogram<u32>, q: f64, unit: f64| {
            (!histogram.is_empty()).then(|| histogram.value_at_quantile(q) as f64 * unit)
        };
        let ms = LATENCY_UNIT_MICROS as f64 / 1000.0;
        let mib = 1.0 / 1024.0;
        Summary {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests == 0 {
                0.0
            } else {
                self.errors as f64 / self.requests as f64
            },
            coldstarts: self.coldstarts,
            p50_ms: quantile(&self.latency, 0.50, ms),
            p95_ms: quantile(&self.latency, 0.95, ms),
            p99_ms: quantile(&self.latency, 0.99, ms),
            measured: self.cpu.len(),
            cpu_p50_ms: quantile(&self.cpu, 0.50, ms),
            cpu_p95_ms: quantile(&self.cpu, 0.95, ms),
            cpu_p99_ms: quantile(&self.cpu, 0.99, ms),
            memory_p50_mib: quantile(&self.memory, 0.50, mib),
            memory_p95_mib: quantile(&self.memory, 0.95, mib),
            memory_p99_mib: quantile(&self.memory, 0.99, mib),
        }
    }
}

impl Store {
    /// An empty store keeping `capacity` traces.
    pub(crate) fn new(capacity: Capacity) -> Self {
        Store {
            capacity,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            recent: VecDeque::new(),
            kept: VecDeque::new(),
            series: BTreeMap::new(),
            pruned_at: 0,
        }
    }

    /// Takes one ended span. Children end before their parents, so a
    /// request's trace is complete when its server span arrives.
    pub(crate) fn add(&mut self, span: Arc<SpanData>) {
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
    fn finish(&mut self, spans: Vec<Arc<SpanData>>) -> Option<Trace> {
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
        let build = spans
            .iter()
            .find_map(|span| {
                let version = string_attribute(span, attributes::PLUGIN_VERSION)?;
                let digest = string_attribute(span, attributes::PLUGIN_DIGEST).unwrap_or_default();
                let short: String = digest.chars().take(8).collect();
                Some(format!("{version} ({short})"))
            })
            .unwrap_or_default();
        let usage = spans.iter().find_map(|span| {
            Some(Usage {
                cpu_ms: float_attribute(span, attributes::PLUGIN_GUEST_CPU_MS)?,
                memory_bytes: int_attribute(span, attributes::PLUGIN_MEMORY_PEAK_BYTES)?,
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
        let slow = self.record(
            &summary,
            &build,
            epoch_secs(root.end_time),
            coldstart,
            usage,
        );
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
    fn record(
        &mut self,
        trace: &TraceSummary,
        build: &str,
        at: u64,
        coldstart: bool,
        usage: Option<Usage>,
    ) -> bool {
        let series = self
            .series
            .entry((trace.plugin.clone(), trace.route.clone(), build.to_owned()))
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
        if let Some(usage) = usage {
            let cpu_units = (usage.cpu_ms * 1000.0) as u64 / LATENCY_UNIT_MICROS;
            stats.cpu.saturating_record(cpu_units.max(1));
            let kib = u64::try_from(usage.memory_bytes).unwrap_or(0) / 1024;
            stats.memory.saturating_record(kib.max(1));
        }
        let slow = series
            .slow_over_ms
            .is_some_and(|p95| trace.duration_ms > p95);
        // Builds come and go (every reload, every version a registry
        // serves is a new one): a series with nothing left in the
        // retention window goes, checked at most once a minute.
        if at >= self.pruned_at + 60 {
            self.series
                .retain(|_, series| series.buckets.back().is_some_and(|b| b.start >= oldest));
            self.pruned_at = at;
        }
        slow
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
    pub(crate) fn stats(&self, window: Duration) -> Vec<PluginStats> {
        let now = epoch_secs(SystemTime::now());
        let since = now.saturating_sub(window.as_secs());
        /// One plugin's numbers while its routes and builds are added up.
        #[derive(Default)]
        struct Sums<'a> {
            total: Option<Stats>,
            routes: BTreeMap<&'a str, Stats>,
            builds: BTreeMap<&'a str, Stats>,
            points: BTreeMap<u64, Stats>,
        }
        let mut plugins: BTreeMap<&str, Sums> = BTreeMap::new();
        for ((plugin, route, build), series) in &self.series {
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
            for into in [
                sums.routes.entry(route).or_insert_with(Stats::new),
                sums.builds.entry(build).or_insert_with(Stats::new),
            ] {
                into.add(&route_stats);
            }
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
                routes: sums
                    .routes
                    .iter()
                    .map(|(route, stats)| RouteStats {
                        route: (*route).to_owned(),
                        summary: stats.summary(),
                    })
                    .collect(),
                comparison: compared(&sums.builds),
                versions: sums
                    .builds
                    .iter()
                    .map(|(build, stats)| VersionStats {
                        build: (*build).to_owned(),
                        summary: stats.summary(),
                    })
                    .collect(),
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
    pub(crate) fn traces(&self, plugin: Option<&str>, route: Option<&str>) -> Vec<TraceSummary> {
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
    pub(crate) fn trace(&self, trace_id: &str) -> Option<Arc<Trace>> {
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
    pub(crate) fn view(&self) -> TraceView {
        let start = self.spans.last().map_or(UNIX_EPOCH, |root| root.start_time);
        let mut spans: Vec<SpanView> = self.spans.iter().map(|s| span_view(s, start)).collect();
        spans.sort_by(|a, b| a.offset_ms.total_cmp(&b.offset_ms));
        TraceView {
            summary: self.summary.clone(),
            spans,
        }
    }
}

/// With two or more builds of a plugin in the window, the second busiest
/// against the busiest (a canary against its plugin, at any weight under
/// half).
fn compared(builds: &BTreeMap<&str, Stats>) -> Option<Comparison> {
    let mut by_calls: Vec<(&&str, &Stats)> = builds.iter().collect();
    by_calls.sort_by_key(|(_, stats)| std::cmp::Reverse(stats.requests));
    let [(baseline, base), (candidate, other), ..] = by_calls.as_slice() else {
        return None;
    };
    Some(compare::compare(
        (baseline, &base.sample()),
        (candidate, &other.sample()),
    ))
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

fn string_attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn float_attribute(span: &SpanData, key: &str) -> Option<f64> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .and_then(|kv| match kv.value {
            Value::F64(v) => Some(v),
            _ => None,
        })
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

fn epoch_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn epoch_millis(time: SystemTime) -> f64 {
    millis(time.duration_since(UNIX_EPOCH).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        KeyValue,
        trace::{SpanContext, SpanId, TraceFlags, TraceState},
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    /// A span of trace `trace` ending at `end`, taking `millis`.
    fn span(trace: u128, kind: SpanKind, end: SystemTime, millis: u64, status: i64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(trace as u64 + 1),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: kind,
            name: "GET /r".into(),
            start_time: end - Duration::from_millis(millis),
            end_time: end,
            attributes: vec![
                KeyValue::new(attributes::PLUGIN_NAME, "p"),
                KeyValue::new(attributes::HTTP_ROUTE, "/r"),
                KeyValue::new(attributes::HTTP_RESPONSE_STATUS_CODE, status),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn request(store: &mut Store, trace: u128, end: SystemTime, millis: u64, status: i64) {
        store.add(Arc::new(span(
            trace,
            SpanKind::Internal,
            end,
            millis,
            status,
        )));
        store.add(Arc::new(span(trace, SpanKind::Server, end, millis, status)));
    }

    /// A request of plugin `p` served by build `version`, ending at `end`.
    fn request_of(store: &mut Store, trace: u128, end: SystemTime, version: &str) {
        let mut invocation = span(trace, SpanKind::Internal, end, 1, 200);
        invocation.attributes.extend([
            KeyValue::new(attributes::PLUGIN_VERSION, version.to_owned()),
            KeyValue::new(attributes::PLUGIN_DIGEST, "ab".repeat(32)),
        ]);
        store.add(Arc::new(invocation));
        store.add(Arc::new(span(trace, SpanKind::Server, end, 1, 200)));
    }

    #[test]
    fn builds_gone_for_longer_than_the_retention_are_forgotten() {
        let mut store = Store::new(Capacity { recent: 5, kept: 3 });
        let now = SystemTime::now();
        let then = now - RETENTION - Duration::from_secs(120);
        // A registry serving a new version every minute, long ago…
        for n in 0..100u128 {
            request_of(
                &mut store,
                n + 1,
                then + Duration::from_secs(n as u64),
                &format!("0.{n}.0"),
            );
        }
        // …and the one serving now.
        request_of(&mut store, 1000, now, "1.0.0");
        assert_eq!(
            store.series.len(),
            1,
            "{:?}",
            store.series.keys().collect::<Vec<_>>()
        );
        let stats = store.stats(RETENTION);
        assert_eq!(stats[0].versions.len(), 1);
        assert_eq!(stats[0].versions[0].build, "1.0.0 (abababab)");
    }

    fn kept(store: &Store, trace: u128) -> Option<&'static str> {
        let id = TraceId::from(trace).to_string();
        store.trace(&id).unwrap().summary.kept
    }

    #[test]
    fn a_trace_over_its_routes_recent_p95_is_slow_and_a_5xx_failed() {
        let mut store = Store::new(Capacity { recent: 5, kept: 3 });
        let now = SystemTime::now();
        // Twenty fast requests make the route's p95; the first second has
        // too few requests to call anything slow.
        for trace in 1..=20 {
            request(&mut store, trace, now - Duration::from_secs(2), 1, 200);
        }
        request(&mut store, 21, now, 50, 200);
        request(&mut store, 22, now, 1, 200);
        request(&mut store, 23, now, 1, 503);
        assert_eq!(kept(&store, 21), Some("slow"));
        assert_eq!(kept(&store, 22), None);
        assert_eq!(kept(&store, 23), Some("failed"));
        // Recent traces are bounded; kept ones outlive them.
        for trace in 24..=30 {
            request(&mut store, trace, now, 1, 200);
        }
        let listed: Vec<String> = store
            .traces(None, None)
            .into_iter()
            .map(|t| t.trace_id)
            .collect();
        assert_eq!(listed.len(), 5 + 2, "{listed:?}");
        assert!(store.trace(&TraceId::from(21).to_string()).is_some());
        assert!(store.trace(&TraceId::from(22).to_string()).is_none());
    }

    #[test]
    fn spans_of_traces_without_a_server_span_are_evicted_oldest_first() {
        let mut store = Store::new(Capacity { recent: 4, kept: 1 });
        let now = SystemTime::now();
        // Plugin loads and dropped requests: spans that never complete.
        for trace in 1..=100 {
            store.add(Arc::new(span(trace, SpanKind::Internal, now, 1, 200)));
        }
        assert_eq!(store.pending.len(), 4 * 16);
        assert_eq!(store.pending_order.len(), 4 * 16);
        // The oldest were dropped: a late server span finds only itself.
        store.add(Arc::new(span(1, SpanKind::Server, now, 1, 200)));
        assert_eq!(
            store
                .trace(&TraceId::from(1).to_string())
                .unwrap()
                .summary
                .span_count,
            1
        );
        // A recent one is still whole.
        store.add(Arc::new(span(100, SpanKind::Server, now, 1, 200)));
        assert_eq!(
            store
                .trace(&TraceId::from(100).to_string())
                .unwrap()
                .summary
                .span_count,
            2
        );
    }
}
