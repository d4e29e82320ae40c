//! Test plugin: a standard `wasi:http/proxy` component that knows nothing
//! of comb and traces itself with the OpenTelemetry SDK from crates.io,
//! handing its spans and log records to the host through `wasi:otel`, as a
//! Spin component does: a span processor and a log processor of its own
//! over the WIT (the published guest libraries are the same shape).
//!
//! - `…/traced`: under the host's span (`outer-span-context`), a `handle`
//!   span (SERVER) with a `load` child and a `query` grandchild; attributes
//!   of every kind, events, a link, an error status on `query`, a log
//!   record logged inside `load`, and a counter `app.handled` (read with
//!   the SDK's manual reader as the call ends and exported). Ids are written in hex without zero
//!   padding, as the published Rust library writes them.
//! - `…/fetch?to=HOST:PORT`: an outgoing `GET http://HOST:PORT/hello` made
//!   inside an SDK span `fetch` (comb's CLIENT span for it goes under
//!   `fetch`).
//! - `…/measured`: exports metrics as an SDK's reader would at the end of
//!   a call: a cumulative counter, a gauge, a histogram, one point with
//!   comb's own key, and a gauge named like comb's `faas.invoke_duration`.
//! - `…/hostile`: calls the WIT directly, as no honest SDK would, in this
//!   order: a span in another trace, comb's own keys and an `invoke …`
//!   name, a span ended twice, one ended but never started, one whose
//!   parent is outside the call, then 600 spans (past comb's 512 per call).
//!
//! Both answer 200 with a line saying what they did.

use std::{
    sync::{Arc, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    Array, Context, InstrumentationScope, KeyValue, Value,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    metrics::MeterProvider as _,
    trace::{
        Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags,
        TraceId, TraceState, Tracer as _, TracerProvider as _,
    },
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    logs::{LogProcessor, SdkLogRecord, SdkLoggerProvider},
    metrics::{
        InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
        data::{AggregatedMetrics, MetricData, ResourceMetrics, Sum},
        reader::MetricReader,
    },
    trace::{SdkTracerProvider, Span, SpanData, SpanProcessor},
};
use wasip2::{
    exports::http::incoming_handler::Guest,
    http::{
        outgoing_handler,
        types::{
            Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse,
            ResponseOutparam, Scheme,
        },
    },
};

mod otel {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "wasi:otel/imports@0.2.0-rc.2",
        generate_all,
    });
    pub(crate) use self::wasi::{
        clocks::wall_clock::Datetime,
        otel::{logs, metrics, tracing, types},
    };
}

use otel::{Datetime, logs, metrics, tracing as wit, types};

struct OtelGuest;

impl Guest for OtelGuest {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let said = if path.ends_with("/hostile") {
            hostile()
        } else if let Some((_, to)) = path.split_once("/fetch?to=") {
            fetch(to)
        } else if path.ends_with("/measured") {
            export_metrics();
            "measured\n".to_owned()
        } else {
            traced()
        };
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("the body, once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("the body stream, once");
        stream
            .blocking_write_and_flush(said.as_bytes())
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasip2::http::proxy::export!(OtelGuest);

/// The honest path: the SDK, with the host's span as the parent.
fn traced() -> String {
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(WasiSpans)
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_log_processor(WasiLogs)
        .build();
    let scope = InstrumentationScope::builder("otel_guest")
        .with_version("1.2.3")
        .with_attributes([KeyValue::new("scope.purpose", "test")])
        .build();
    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .build();
    let tracer = tracer_provider.tracer_with_scope(scope.clone());
    let logger = logger_provider.logger_with_scope(scope.clone());
    let handled = meter_provider
        .meter_with_scope(scope)
        .u64_counter("app.handled")
        .with_unit("{request}")
        .build();
    handled.add(1, &[KeyValue::new("app.route", "/traced")]);

    let host = Context::new().with_remote_span_context(span_context(&wit::outer_span_context()));
    let handle = tracer
        .span_builder("handle")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("app.string", "text"),
            KeyValue::new("app.bool", true),
            KeyValue::new("app.int", -42_i64),
            KeyValue::new("app.float", 2.5),
            KeyValue::new(
                "app.strings",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
            KeyValue::new("app.bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("app.ints", Value::Array(Array::I64(vec![1, 2, 3]))),
            KeyValue::new("app.floats", Value::Array(Array::F64(vec![0.5, 1.5]))),
        ])
        .with_links(vec![Link::with_context(SpanContext::new(
            TraceId::from(0xabc_u128),
            SpanId::from(0xdef_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))])
        .start_with_context(&tracer, &host);
    let handle = host.with_span(handle);
    {
        let _handle = handle.clone().attach();
        tracer.in_span("load", |load| {
            load.span()
                .add_event("cache.miss", vec![KeyValue::new("app.key", "activities")]);
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Warn);
            record.set_severity_text("WARN");
            record.set_body(AnyValue::from("loaded from the slow path"));
            record.add_attribute("app.rows", 3_i64);
            logger.emit(record);
            tracer.in_span("query", |query| {
                let span = query.span();
                span.set_attribute(KeyValue::new("db.rows", 0_i64));
                span.set_status(Status::error("no rows"));
            });
        });
    }
    handle.span().end();
    let _ = tracer_provider.shutdown();
    let _ = logger_provider.shutdown();
    let mut readings = ResourceMetrics::default();
    if reader.collect(&mut readings).is_ok() {
        let _ = metrics::export(&wit_metrics(&readings));
    }
    "traced\n".to_owned()
}

/// What an SDK's metric reader hands the host as the call ends: a
/// cumulative counter, a gauge, and a histogram (which comb cannot
/// re-record, and counts as dropped); one point forges comb's key.
fn export_metrics() {
    let now = datetime(SystemTime::now());
    let point = |attributes: Vec<types::KeyValue>, value| metrics::SumDataPoint {
        attributes,
        value,
        exemplars: Vec::new(),
    };
    let sum = metrics::Sum {
        data_points: vec![
            point(
                vec![attribute("app.route", "\"/traced\"")],
                metrics::MetricNumber::U64(2),
            ),
            point(
                vec![attribute("plugin.name", "\"home_activities\"")],
                metrics::MetricNumber::U64(5),
            ),
        ],
        start_time: now,
        time: now,
        temporality: metrics::Temporality::Cumulative,
        is_monotonic: true,
    };
    let gauge = metrics::Gauge {
        data_points: vec![metrics::GaugeDataPoint {
            attributes: Vec::new(),
            value: metrics::MetricNumber::F64(2.5),
            exemplars: Vec::new(),
        }],
        start_time: None,
        time: now,
    };
    let histogram = metrics::Histogram {
        data_points: vec![metrics::HistogramDataPoint {
            attributes: Vec::new(),
            count: 1,
            bounds: vec![1.0],
            bucket_counts: vec![1, 0],
            min: None,
            max: None,
            sum: metrics::MetricNumber::F64(0.5),
            exemplars: Vec::new(),
        }],
        start_time: now,
        time: now,
        temporality: metrics::Temporality::Delta,
    };
    let metric = |name: &str, unit: &str, data| metrics::Metric {
        name: name.to_owned(),
        description: format!("{name}, as the guest measured it"),
        unit: unit.to_owned(),
        data,
    };
    let _ = metrics::export(&metrics::ResourceMetrics {
        resource: types::Resource {
            attributes: Vec::new(),
            schema_url: None,
        },
        scope_metrics: vec![metrics::ScopeMetrics {
            scope: types::InstrumentationScope {
                name: "otel_guest".to_owned(),
                version: None,
                schema_url: None,
                attributes: Vec::new(),
            },
            metrics: vec![
                metric(
                    "app.requests",
                    "{request}",
                    metrics::MetricData::U64Sum(sum),
                ),
                metric("app.queue", "{item}", metrics::MetricData::F64Gauge(gauge)),
                metric(
                    "app.latency",
                    "s",
                    metrics::MetricData::F64Histogram(histogram),
                ),
                metric(
                    "faas.invoke_duration",
                    "s",
                    metrics::MetricData::F64Gauge(metrics::Gauge {
                        data_points: vec![metrics::GaugeDataPoint {
                            attributes: Vec::new(),
                            value: metrics::MetricNumber::F64(0.001),
                            exemplars: Vec::new(),
                        }],
                        start_time: None,
                        time: now,
                    }),
                ),
            ],
        }],
    });
}

/// An outgoing call inside a span of the SDK's.
fn fetch(authority: &str) -> String {
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(WasiSpans)
        .build();
    let tracer = tracer_provider.tracer("otel_guest");
    let host = Context::new().with_remote_span_context(span_context(&wit::outer_span_context()));
    let span = tracer.start_with_context("fetch", &host);
    let cx = host.with_span(span);
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).expect("a scheme");
    request
        .set_authority(Some(authority))
        .expect("an authority");
    request.set_path_with_query(Some("/hello")).expect("a path");
    let status = match outgoing_handler::handle(request, None) {
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => response.status().to_string(),
                other => format!("{other:?}"),
            }
        }
        Err(error) => format!("{error:?}"),
    };
    cx.span().end();
    let _ = tracer_provider.shutdown();
    format!("fetched {status}\n")
}

/// The hostile path: the WIT called directly.
fn hostile() -> String {
    let host = wit::outer_span_context();
    let trace_id = host.trace_id.clone();
    let start = |span_id: u64| {
        let context = wit_context(&trace_id, span_id);
        wit::on_start(&context);
        context
    };
    let end = |context: &wit::SpanContext, name: &str, parent: &str, attributes| {
        wit::on_end(&span_data(context.clone(), name, parent, attributes));
    };
    // Into another trace: started and ended with a forged trace id.
    let forged = wit_context("123456789abcdef", 0x2001);
    wit::on_start(&forged);
    end(&forged, "forged-trace", &host.span_id, vec![]);
    // comb's own keys, and comb's invocation span name.
    let keys = start(0x3001);
    end(
        &keys,
        "invoke home_activities",
        &host.span_id,
        vec![
            attribute("plugin.name", "\"home_activities\""),
            attribute("faas.coldstart", "true"),
            attribute("app.kept", "\"yes\""),
        ],
    );
    // Ended twice, and ended without a start.
    let twice = start(0x4001);
    end(&twice, "twice", &host.span_id, vec![]);
    end(&twice, "twice", &host.span_id, vec![]);
    end(
        &wit_context(&trace_id, 0x5001),
        "never-started",
        &host.span_id,
        vec![],
    );
    // A parent that is not the call's.
    let stray = start(0x6001);
    end(&stray, "stray-parent", "feedfacefeedface", vec![]);
    // Last, far more spans than a call may make (512 by default).
    for id in 1..=600_u64 {
        let span = start(0x1000 + id);
        end(&span, "flood", &host.span_id, vec![]);
    }
    "hostile\n".to_owned()
}

/// The manual reader, shared: the provider holds one handle, the call's
/// end collects through the other.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, readings: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(readings)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The SDK's readings as the WIT's: sums and gauges (what this component
/// measures).
fn wit_metrics(readings: &ResourceMetrics) -> metrics::ResourceMetrics {
    fn sum<T: Copy>(sum: &Sum<T>, number: fn(T) -> metrics::MetricNumber) -> metrics::Sum {
        metrics::Sum {
            data_points: (sum.data_points())
                .map(|point| metrics::SumDataPoint {
                    attributes: point.attributes().map(key_value).collect(),
                    value: number(point.value()),
                    exemplars: Vec::new(),
                })
                .collect(),
            start_time: datetime(sum.start_time()),
            time: datetime(sum.time()),
            temporality: match sum.temporality() {
                Temporality::Delta => metrics::Temporality::Delta,
                Temporality::LowMemory => metrics::Temporality::LowMemory,
                _ => metrics::Temporality::Cumulative,
            },
            is_monotonic: sum.is_monotonic(),
        }
    }
    let scope_metrics = (readings.scope_metrics())
        .map(|scope| metrics::ScopeMetrics {
            scope: types::InstrumentationScope {
                name: scope.scope().name().to_owned(),
                version: scope.scope().version().map(str::to_owned),
                schema_url: None,
                attributes: Vec::new(),
            },
            metrics: (scope.metrics())
                .filter_map(|metric| {
                    let data = match metric.data() {
                        AggregatedMetrics::U64(MetricData::Sum(s)) => {
                            metrics::MetricData::U64Sum(sum(s, metrics::MetricNumber::U64))
                        }
                        AggregatedMetrics::F64(MetricData::Sum(s)) => {
                            metrics::MetricData::F64Sum(sum(s, metrics::MetricNumber::F64))
                        }
                        _ => return None,
                    };
                    Some(metrics::Metric {
                        name: metric.name().to_owned(),
                        description: metric.description().to_owned(),
                        unit: metric.unit().to_owned(),
                        data,
                    })
                })
                .collect(),
        })
        .collect();
    metrics::ResourceMetrics {
        resource: types::Resource {
            attributes: Vec::new(),
            schema_url: None,
        },
        scope_metrics,
    }
}

/// Hands each span to the host as it starts and ends.
#[derive(Debug)]
struct WasiSpans;

impl SpanProcessor for WasiSpans {
    fn on_start(&self, span: &mut Span, _cx: &Context) {
        wit::on_start(&wit_span_context(span.span_context()));
    }

    fn on_end(&self, span: SpanData) {
        wit::on_end(&wit::SpanData {
            span_context: wit_span_context(&span.span_context),
            parent_span_id: hex(u64::from_be_bytes(span.parent_span_id.to_bytes()).into()),
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
            events: span
                .events
                .iter()
                .map(|event| wit::Event {
                    name: event.name.to_string(),
                    time: datetime(event.timestamp),
                    attributes: key_values(&event.attributes),
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|link| wit::Link {
                    span_context: wit_span_context(&link.span_context),
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
                schema_url: span.instrumentation_scope.schema_url().map(str::to_owned),
                attributes: span
                    .instrumentation_scope
                    .attributes()
                    .map(key_value)
                    .collect(),
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

/// Hands each log record to the host as it is emitted.
#[derive(Debug)]
struct WasiLogs;

impl LogProcessor for WasiLogs {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        let trace = record.trace_context();
        logs::on_emit(&logs::LogRecord {
            timestamp: record.timestamp().map(datetime),
            observed_timestamp: record.observed_timestamp().map(datetime),
            severity_text: record.severity_text().map(str::to_owned),
            severity_number: record.severity_number().map(|s| s as u8),
            body: record.body().map(any_value),
            attributes: Some(
                record
                    .attributes_iter()
                    .map(|(key, value)| types::KeyValue {
                        key: key.to_string(),
                        value: any_value(value),
                    })
                    .collect(),
            ),
            event_name: record.event_name().map(str::to_owned),
            resource: None,
            instrumentation_scope: Some(types::InstrumentationScope {
                name: scope.name().to_owned(),
                version: scope.version().map(str::to_owned),
                schema_url: None,
                attributes: Vec::new(),
            }),
            trace_id: trace.map(|t| hex(u128::from_be_bytes(t.trace_id.to_bytes()))),
            span_id: trace.map(|t| hex(u64::from_be_bytes(t.span_id.to_bytes()).into())),
            trace_flags: trace.map(|t| match t.trace_flags {
                Some(flags) if flags.is_sampled() => wit::TraceFlags::SAMPLED,
                _ => wit::TraceFlags::empty(),
            }),
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
}

/// Hex without zero padding, as the published guest library writes ids.
fn hex(id: u128) -> String {
    format!("{id:x}")
}

fn wit_span_context(context: &SpanContext) -> wit::SpanContext {
    wit::SpanContext {
        trace_id: hex(u128::from_be_bytes(context.trace_id().to_bytes())),
        span_id: hex(u64::from_be_bytes(context.span_id().to_bytes()).into()),
        trace_flags: if context.is_sampled() {
            wit::TraceFlags::SAMPLED
        } else {
            wit::TraceFlags::empty()
        },
        is_remote: context.is_remote(),
        trace_state: Vec::new(),
    }
}

fn wit_context(trace_id: &str, span_id: u64) -> wit::SpanContext {
    wit::SpanContext {
        trace_id: trace_id.to_owned(),
        span_id: hex(span_id.into()),
        trace_flags: wit::TraceFlags::SAMPLED,
        is_remote: false,
        trace_state: Vec::new(),
    }
}

/// The host's span context, as the SDK's remote parent.
fn span_context(context: &wit::SpanContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_hex(&context.trace_id).unwrap_or(TraceId::INVALID),
        SpanId::from_hex(&context.span_id).unwrap_or(SpanId::INVALID),
        if context.trace_flags == wit::TraceFlags::SAMPLED {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    )
}

fn span_data(
    context: wit::SpanContext,
    name: &str,
    parent: &str,
    attributes: Vec<types::KeyValue>,
) -> wit::SpanData {
    let now = datetime(SystemTime::now());
    wit::SpanData {
        span_context: context,
        parent_span_id: parent.to_owned(),
        span_kind: wit::SpanKind::Internal,
        name: name.to_owned(),
        start_time: now,
        end_time: now,
        attributes,
        events: Vec::new(),
        links: Vec::new(),
        status: wit::Status::Unset,
        instrumentation_scope: types::InstrumentationScope {
            name: "hostile".to_owned(),
            version: None,
            schema_url: None,
            attributes: Vec::new(),
        },
        dropped_attributes: 0,
        dropped_events: 0,
        dropped_links: 0,
    }
}

fn attribute(key: &str, json: &str) -> types::KeyValue {
    types::KeyValue {
        key: key.to_owned(),
        value: json.to_owned(),
    }
}

fn datetime(time: SystemTime) -> Datetime {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Datetime {
        seconds: since.as_secs(),
        nanoseconds: since.subsec_nanos(),
    }
}

fn key_values(attributes: &[KeyValue]) -> Vec<types::KeyValue> {
    attributes.iter().map(key_value).collect()
}

/// An attribute with its value in the spec's JSON encoding.
fn key_value(attribute: &KeyValue) -> types::KeyValue {
    let value = match &attribute.value {
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
        _ => serde_json::Value::Null,
    };
    types::KeyValue {
        key: attribute.key.to_string(),
        value: value.to_string(),
    }
}

fn any_value(value: &AnyValue) -> String {
    let json = match value {
        AnyValue::Int(i) => serde_json::json!(i),
        AnyValue::Double(f) => serde_json::json!(f),
        AnyValue::String(s) => serde_json::json!(s.as_str()),
        AnyValue::Boolean(b) => serde_json::json!(b),
        other => serde_json::json!(format!("{other:?}")),
    };
    json.to_string()
}
