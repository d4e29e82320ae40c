//! The JSON comb's page reads: per-plugin numbers, trace lists, one trace's
//! spans. Plain data, built by the [`Store`](super::store::Store).

use std::time::SystemTime;

use opentelemetry::{
    Value,
    trace::{SpanKind, Status},
};
use opentelemetry_sdk::trace::SpanData;
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::compare::Comparison;
use crate::spans::millis;

/// Counts and percentiles over a window.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
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
    /// Requests whose guest call was measured (those that reached a guest
    /// and were recorded): what the CPU and memory percentiles are over.
    pub measured: u64,
    /// Median guest CPU time per call (`plugin.guest_cpu_ms`).
    pub cpu_p50_ms: Option<f64>,
    /// 95th percentile guest CPU time per call.
    pub cpu_p95_ms: Option<f64>,
    /// 99th percentile guest CPU time per call.
    pub cpu_p99_ms: Option<f64>,
    /// Median peak linear memory per call (`plugin.memory.peak_bytes`), MiB.
    pub memory_p50_mib: Option<f64>,
    /// 95th percentile peak linear memory per call, MiB.
    pub memory_p95_mib: Option<f64>,
    /// 99th percentile peak linear memory per call, MiB.
    pub memory_p99_mib: Option<f64>,
}

/// One plugin's row: its summary and one per route.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PluginStats {
    /// `plugin.name`.
    pub plugin: String,
    /// Over all its routes.
    #[serde(flatten)]
    pub summary: Summary,
    /// Per route pattern.
    pub routes: Vec<RouteStats>,
    /// Per build (`version (digest)`): more than one when a canary, or a
    /// replaced version, served in the window.
    pub versions: Vec<VersionStats>,
    /// With two builds or more: the second busiest against the busiest.
    pub comparison: Option<Comparison>,
    /// One point per bucket in the window, oldest first.
    pub series: Vec<Point>,
}

/// One build's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VersionStats {
    /// `plugin.version (first 8 of plugin.digest)`.
    pub build: String,
    /// Its numbers.
    #[serde(flatten)]
    pub summary: Summary,
}

/// One route's row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteStats {
    /// `http.route`.
    pub route: String,
    /// Its numbers.
    #[serde(flatten)]
    pub summary: Summary,
}

/// One bucket of a plugin's latency over time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Point {
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
pub(crate) struct TraceSummary {
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
pub(crate) struct TraceView {
    /// The list's numbers.
    #[serde(flatten)]
    pub summary: TraceSummary,
    /// Every span, by start time.
    pub spans: Vec<SpanView>,
}

/// One span of a [`TraceView`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SpanView {
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
pub(crate) struct EventView {
    /// The event's name (`exception`…).
    pub name: String,
    /// From the trace's start.
    pub offset_ms: f64,
    /// Attributes.
    pub attributes: Map<String, Json>,
}

pub(super) fn span_view(span: &SpanData, trace_start: SystemTime) -> SpanView {
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
