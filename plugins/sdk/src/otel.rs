//! Tracing with the OpenTelemetry API (feature `otel`): a tracer provider
//! over `wasi:otel`, the standard guest telemetry interface comb serves, so
//! a plugin traces with `opentelemetry`'s `Tracer` as a Python or
//! JavaScript plugin traces with its language's API:
//!
//! ```no_run
//! use opentelemetry::{KeyValue, trace::{Span as _, Tracer as _}};
//!
//! let _call = comb_sdk::otel::enter(); // the invocation span is current
//! let tracer = comb_sdk::otel::tracer("home_activities");
//! let mut span = tracer.start("home-activites-mock-data");
//! span.set_attribute(KeyValue::new("app.result_length", 3));
//! ```
//!
//! Spans are the SDK's own (`opentelemetry_sdk`), with ids, times, events,
//! links and status as the OpenTelemetry API sets them; each one is handed
//! to comb when it ends, and comb exports it under the invocation span with
//! the plugin's name, within the same per-call bounds as [`crate::trace`].
//! Which to choose: [`crate::trace`] is comb's own API, smaller and cheaper
//! per span (no SDK in the plugin); this one is the OpenTelemetry API, for
//! code and libraries already written against it (docs/plugins.md has the
//! measured cost of each).

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    Array, Context, ContextGuard, InstrumentationScope, KeyValue, Value,
    trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    },
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor},
};

use self::bindings::wasi::{
    clocks::wall_clock::Datetime,
    otel::{tracing as wit, types},
};

/// Bindings for the `wasi:otel` imports (`wit/deps/otel`).
#[allow(missing_docs, unreachable_pub, unsafe_code, reason = "generated code")]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasi:otel/imports@0.2.0-rc.2",
        generate_all,
    });
}

/// A tracer named `name`, from a provider that hands every ended span to
/// comb. One provider per instance, made on first use.
pub fn tracer(name: &'static str) -> SdkTracer {
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            SdkTracerProvider::builder()
                .with_span_processor(ToComb)
                .build()
        })
        .tracer_with_scope(InstrumentationScope::builder(name).build())
}

/// Makes comb's invocation span the current context until the guard drops:
/// spans started meanwhile (`tracer.start`, `in_span`) are its children,
/// and sampled as it is.
pub fn enter() -> ContextGuard {
    invocation().attach()
}

/// A context holding comb's invocation span, as a remote parent.
pub fn invocation() -> Context {
    let host = wit::outer_span_context();
    let context = SpanContext::new(
        TraceId::from_hex(&host.trace_id).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(&host.span_id).unwrap_or(SpanId::INVALID),
        if host.trace_flags == wit::TraceFlags::SAMPLED {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(context)
}

/// Hands each span to comb as it starts and ends.
#[derive(Debug)]
struct ToComb;

impl SpanProcessor for ToComb {
    fn on_start(&self, span: &mut Span, _cx: &Context) {
        use opentelemetry::trace::Span as _;
        wit::on_start(&span_context(span.span_context()));
    }

    fn on_end(&self, span: SpanData) {
        wit::on_end(&wit::SpanData {
            span_context: span_context(&span.span_context),
            parent_span_id: span.parent_span_id.to_string(),
            span_kind: match span.span_kind {
                SpanKind::Client => wit::SpanKind::Client,
                SpanKind::Server => wit::SpanKind::Server,
                SpanKind::Producer => wit::SpanKind::Producer,
                SpanKind::Consumer => wit::SpanKind::Consumer,
                SpanKind::Internal => wit::SpanKind::Internal,
            },
            name: span.name.into_owned(),
            start_time: datetime(span.start_time),
            end_time: datetime(span.end_time),
            attributes: key_values(&span.attributes),
            events: (span.events.iter())
                .map(|event| wit::Event {
                    name: event.name.to_string(),
                    time: datetime(event.timestamp),
                    attributes: key_values(&event.attributes),
                })
                .collect(),
            links: (span.links.iter())
                .map(|link| wit::Link {
                    span_context: span_context(&link.span_context),
                    attributes: key_values(&link.attributes),
                })
                .collect(),
            status: match span.status {
                Status::Unset => wit::Status::Unset,
                Status::Ok => wit::Status::Ok,
                Status::Error { description } => wit::Status::Error(description.into_owned()),
            },
            instrumentation_scope: types::InstrumentationScope {
                name: span.instrumentation_scope.name().to_owned(),
                version: span.instrumentation_scope.version().map(str::to_owned),
                schema_url: None,
                attributes: Vec::new(),
            },
            dropped_attributes: span.dropped_attributes_count,
            dropped_events: span.events.dropped_count,
            dropped_links: span.links.dropped_count,
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn span_context(context: &SpanContext) -> wit::SpanContext {
    wit::SpanContext {
        trace_id: context.trace_id().to_string(),
        span_id: context.span_id().to_string(),
        trace_flags: if context.is_sampled() {
            wit::TraceFlags::SAMPLED
        } else {
            wit::TraceFlags::empty()
        },
        is_remote: context.is_remote(),
        trace_state: Vec::new(),
    }
}

fn datetime(time: std::time::SystemTime) -> Datetime {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Datetime {
        seconds: since.as_secs(),
        nanoseconds: since.subsec_nanos(),
    }
}

fn key_values(attributes: &[KeyValue]) -> Vec<types::KeyValue> {
    attributes
        .iter()
        .map(|attribute| types::KeyValue {
            key: attribute.key.to_string(),
            value: json(&attribute.value),
        })
        .collect()
}

/// A value in `wasi:otel`'s JSON encoding.
fn json(value: &Value) -> String {
    let value = match value {
        Value::Bool(b) => serde_json::json!(b),
        Value::I64(i) => serde_json::json!(i),
        Value::F64(f) => serde_json::json!(f),
        Value::String(s) => serde_json::json!(s.as_str()),
        Value::Array(Array::Bool(list)) => serde_json::json!(list),
        Value::Array(Array::I64(list)) => serde_json::json!(list),
        Value::Array(Array::F64(list)) => serde_json::json!(list),
        Value::Array(Array::String(list)) => {
            serde_json::json!(list.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        }
        other => serde_json::json!(other.to_string()),
    };
    value.to_string()
}
