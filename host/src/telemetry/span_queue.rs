//! Spans into comb's [`Pipeline`]: the one span processor on the tracer
//! provider, whose spans are whose, how large they are, and the exporter
//! for either transport.

use std::{sync::Arc, time::Duration};

use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanExporter as _, SpanProcessor},
};

use super::{
    export_queue::Item,
    otlp_http::HttpSpanExporter,
    pipeline::{Exporter, Pipeline},
};

/// The most span data waiting for export or being exported, estimated.
/// The count is `OTEL_BSP_MAX_QUEUE_SIZE`, and a plugin's call may put up
/// to its telemetry budget (256 KiB) into one span: behind a stalled
/// collector, 8192 such spans would hold 2 GiB. Ordinary spans are under
/// 1 KiB, so honest traffic reaches the count first.
pub(super) const SPAN_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// How long a flush the SDK asks for (`force_flush`) may wait.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Whose share of the export queue `span` counts in: the plugin whose
/// call it belongs to, by its first `plugin.name`, which comb sets when it
/// starts the server, invocation, guest and outgoing spans of a plugin's
/// calls (a guest cannot set `plugin.*` keys); "" (no plugin's name) for
/// comb's spans of no plugin, such as a 404's. Read on the pipeline's
/// thread, not the request path: the SDK's `SpanData` has no field for
/// data of comb's own.
impl Item for Arc<SpanData> {
    fn owner(&self) -> &str {
        let name = self
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == crate::spans::attributes::PLUGIN_NAME);
        match name.map(|kv| &kv.value) {
            Some(opentelemetry::Value::String(name)) => name.as_str(),
            _ => "",
        }
    }
}

/// comb's span pipeline as the tracer provider's one processor; spans
/// finished elsewhere (a guest's own, already ended, with its own ids and
/// times) come in through a clone, so they meet the same bounds and
/// shares.
#[derive(Debug, Clone)]
pub struct SpanIntake(pub(super) Arc<Pipeline<Arc<SpanData>>>);

impl SpanIntake {
    /// One finished span, as the tracer hands over its own when they end.
    pub fn end(&self, span: SpanData) {
        // Unsampled spans are neither exported nor shown.
        if span.span_context.is_sampled() {
            let size = estimated_size(&span);
            self.0.push(Arc::new(span), size);
        }
    }
}

impl SpanProcessor for SpanIntake {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.flush(FLUSH_TIMEOUT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown(timeout)
    }

    /// The exporter has it, set before the pipeline starts.
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// The span exporter for either transport: over HTTP comb's own (see
/// `otlp_http.rs`), which encodes the shared spans in place; over gRPC the
/// OTLP crate's, which takes them by value (a copy of each still shown on
/// comb's page).
#[derive(Debug)]
pub(super) enum SpanSender {
    Http(HttpSpanExporter),
    Grpc(opentelemetry_otlp::SpanExporter),
}

impl SpanSender {
    /// Sets the resource every request carries.
    pub(super) fn with_resource(mut self, resource: &Resource) -> Self {
        match &mut self {
            SpanSender::Http(exporter) => exporter.set_resource(resource),
            SpanSender::Grpc(exporter) => exporter.set_resource(resource),
        }
        self
    }
}

impl Exporter<Arc<SpanData>> for SpanSender {
    async fn send(&self, spans: Vec<Arc<SpanData>>) -> OTelSdkResult {
        match self {
            SpanSender::Http(exporter) => exporter.export(&spans).await,
            SpanSender::Grpc(exporter) => {
                let spans = spans.into_iter().map(Arc::unwrap_or_clone).collect();
                exporter.export(spans).await
            }
        }
    }
}

/// About how many bytes `span` takes encoded: its strings, and 8 bytes per
/// number (2 per bool), lists counted element by element — a plugin's
/// `s64-list` of 32 768 numbers is 256 KiB, not one value; ids, times and
/// framing are small next to a chunk.
pub(super) fn estimated_size(span: &SpanData) -> usize {
    fn attributes(attributes: &[KeyValue]) -> usize {
        attributes
            .iter()
            .map(|kv| kv.key.as_str().len() + value_size(&kv.value) + 4)
            .sum()
    }
    64 + span.name.len()
        + attributes(&span.attributes)
        + span
            .events
            .iter()
            .map(|event| 16 + event.name.len() + attributes(&event.attributes))
            .sum::<usize>()
        + match &span.status {
            opentelemetry::trace::Status::Error { description } => description.len(),
            _ => 0,
        }
}

/// About how many bytes an attribute's value takes encoded (see
/// [`estimated_size`]).
fn value_size(value: &opentelemetry::Value) -> usize {
    use opentelemetry::{Array, Value};
    match value {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(list)) => list.iter().map(|s| s.as_str().len() + 2).sum(),
        Value::Array(Array::I64(list)) => 8 * list.len(),
        Value::Array(Array::F64(list)) => 8 * list.len(),
        Value::Array(Array::Bool(list)) => 2 * list.len(),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span_with(attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "span".into(),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn number_lists_count_by_their_length() {
        let span = span_with(vec![
            KeyValue::new(
                "app.s64",
                opentelemetry::Value::Array(vec![1_i64; 32 * 1024].into()),
            ),
            KeyValue::new(
                "app.f64",
                opentelemetry::Value::Array(vec![1.0; 1024].into()),
            ),
            KeyValue::new(
                "app.bool",
                opentelemetry::Value::Array(vec![true; 1024].into()),
            ),
        ]);
        assert!(estimated_size(&span) >= 256 * 1024 + 8 * 1024 + 2 * 1024);
    }

    #[test]
    fn a_span_is_its_plugins_or_nobodys() {
        let plugin = span_with(vec![
            KeyValue::new("http.route", "/x"),
            KeyValue::new("plugin.name", "home"),
        ]);
        assert_eq!(Arc::new(plugin).owner(), "home");
        let nobody = span_with(vec![KeyValue::new("plugin.name", 7_i64)]);
        assert_eq!(Arc::new(nobody).owner(), "");
    }
}
