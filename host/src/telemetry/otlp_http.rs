//! comb's OTLP/HTTP span exporter: protobuf written straight from the
//! SDK's `SpanData`.
//!
//! Why not the OTLP crate's: it first converts each batch into
//! `opentelemetry-proto`'s message structs — a `String` for every attribute
//! key and value, spans grouped through a hash map — then encodes and frees
//! them: 7–9 % of comb's CPU under load (`tests/bench/profile.py`), as
//! much as instantiating the plugin. Here each batch is read once and
//! written once into one buffer, every nested message's length counted
//! before it is written, as the Java SDK's marshalers do. The bytes decode
//! to what the crate's conversion builds (the unit test compares the two);
//! gRPC still goes through the OTLP crate.

use std::{
    borrow::{Borrow, Cow},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;

use anyhow::Result;
use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanId, SpanKind, Status},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::SpanData,
};
use prost::encoding::{encode_varint, encoded_len_varint};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::retry;
use crate::config::OtlpTarget;

/// The most of a collector's answer read (a partial-success message is
/// small); the rest is left unread.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Sends spans to one collector as OTLP/HTTP protobuf.
pub(super) struct HttpSpanExporter {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    /// The headers' values (API keys): never in a logged error, even
    /// when a collector echoes them back.
    secrets: Vec<String>,
    /// How long one export may take, retries included.
    timeout: Duration,
    gzip: bool,
    /// The resource, encoded once: it is the same in every request.
    resource: Vec<u8>,
    resource_schema_url: String,
}

/// Header names only: their values may be API keys.
impl std::fmt::Debug for HttpSpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpanExporter")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl HttpSpanExporter {
    /// An exporter for `target`, trusting `client`'s roots.
    pub(super) fn new(target: &OtlpTarget, client: reqwest::Client) -> Result<Self> {
        let mut headers = super::exporters::header_map(target)?;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if target.gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Ok(HttpSpanExporter {
            client,
            url: target.url.clone(),
            headers,
            secrets: (target.headers.iter())
                .map(|(_, value)| value.expose().to_owned())
                .filter(|value| !value.is_empty())
                .collect(),
            timeout: target.timeout,
            gzip: target.gzip,
            resource: Vec::new(),
            resource_schema_url: String::new(),
        })
    }

    /// The error the batch processor logs: the collector and the whole
    /// cause ("… tcp connect error: Connection refused", "HTTP 413 …"),
    /// with any header value in it redacted.
    fn failed(&self, what: impl Into<anyhow::Error>) -> OTelSdkError {
        let mut text = format!("OTLP export to {} failed: {:#}", self.url, what.into());
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        OTelSdkError::InternalFailure(text)
    }

    /// One attempt: the collector's answer (within [`MAX_RESPONSE_BYTES`])
    /// on success; else the error, and whether to try again after a wait
    /// (the collector's `Retry-After`, when it gave one).
    async fn send(&self, body: Bytes, timeout: Duration) -> Result<Vec<u8>, Attempt> {
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            // Refused, reset or unreachable (a collector restarting): the
            // next attempt may find it back.
            Err(error) => {
                let again = (error.is_connect() || error.is_request()) && !error.is_timeout();
                return Err(Attempt {
                    error: error.into(),
                    again: again.then_some(None),
                });
            }
        };
        let status = response.status();
        let asked = retry::retry_after(response.headers());
        let mut answer = Vec::new();
        while answer.len() < MAX_RESPONSE_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        if status.is_success() {
            return Ok(answer);
        }
        let text = String::from_utf8_lossy(&answer[..answer.len().min(512)]);
        Err(Attempt {
            error: anyhow::anyhow!("HTTP {status}: {text}"),
            again: retry::retryable(status).then_some(asked),
        })
    }
}

/// A failed attempt: why, and `Some(wait)` when it may be tried again
/// (after the collector's `Retry-After`, or a backoff when `None`).
struct Attempt {
    error: anyhow::Error,
    again: Option<Option<Duration>>,
}

impl HttpSpanExporter {
    /// Sends `batch` as one request, trying again as [`retry`] says.
    pub(super) async fn export(&self, batch: &[impl Borrow<SpanData>]) -> OTelSdkResult {
        let mut body = export_request(batch, &self.resource, &self.resource_schema_url);
        if self.gzip {
            body = gzipped(&body).map_err(|error| self.failed(error))?;
        }
        let body = Bytes::from(body);
        let mut backoff = retry::Backoff::within(self.timeout);
        let mut attempt = 1;
        loop {
            let failure = match self.send(body.clone(), backoff.remaining()).await {
                Ok(answer) => {
                    warn_on_partial_success(&answer);
                    return Ok(());
                }
                Err(failure) => failure,
            };
            let wait = match failure.again {
                Some(asked) if attempt < retry::MAX_ATTEMPTS => backoff.wait(asked),
                _ => None,
            };
            let Some(wait) = wait else {
                let error = match attempt {
                    1 => failure.error,
                    _ => (failure.error).context(format!("gave up after {attempt} attempts")),
                };
                return Err(self.failed(error));
            };
            tracing::debug!(
                attempt,
                ?wait,
                "OTLP export failed, trying again: {:#}",
                failure.error
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Encodes `resource` once, for every request.
    pub(super) fn set_resource(&mut self, resource: &Resource) {
        let mut encoded = Vec::new();
        for (key, value) in resource.iter() {
            message(&mut encoded, 1, &Attribute(key.as_str(), value));
        }
        self.resource = encoded;
        self.resource_schema_url = resource.schema_url().unwrap_or_default().to_owned();
    }
}

/// The collector's partial success, if it reports rejected spans: logged
/// as the OTLP crate's exporter does.
fn warn_on_partial_success(answer: &[u8]) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message as _;
    let Ok(response) = ExportTraceServiceResponse::decode(answer) else {
        return;
    };
    if let Some(partial) = response.partial_success
        && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
    {
        tracing::warn!(
            rejected_spans = partial.rejected_spans,
            error_message = partial.error_message,
            "the OTLP collector rejected part of an export"
        );
    }
}

fn gzipped(body: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(body)?;
    encoder.finish()
}

/// An `ExportTraceServiceRequest` for `spans`, one `ResourceSpans` with a
/// `ScopeSpans` per instrumentation scope (in order of first appearance).
pub(super) fn export_request(
    spans: &[impl Borrow<SpanData>],
    resource: &[u8],
    schema_url: &str,
) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<Span<'_>>)> = Vec::new();
    for data in spans {
        let data = data.borrow();
        let span = Span::new(data);
        let scope = &data.instrumentation_scope;
        // A handful of scopes (comb's and each plugin's): a scan beats a hash.
        match scopes.iter_mut().find(|(known, _)| *known == scope) {
            Some((_, spans)) => spans.push(span),
            None => scopes.push((scope, vec![span])),
        }
    }
    let request = Request(ResourceSpans {
        resource,
        schema_url,
        scopes: &scopes,
    });
    let mut out = Vec::with_capacity(request.encoded_len());
    request.encode(&mut out);
    out
}

/// Where encoded fields go: a [`Counter`] (the length a nested message is
/// prefixed with) or the request's bytes.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn varint(&mut self, value: u64);
    /// A nested message of `len` bytes: counted as that, or written.
    fn nested(&mut self, len: usize, write: impl FnOnce(&mut Self));
}

/// Counts bytes instead of writing them.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn varint(&mut self, value: u64) {
        self.0 += encoded_len_varint(value);
    }

    fn nested(&mut self, len: usize, _write: impl FnOnce(&mut Self)) {
        self.0 += len;
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn varint(&mut self, value: u64) {
        // Tags and most lengths are one byte.
        match u8::try_from(value) {
            Ok(byte) if byte < 0x80 => self.push(byte),
            _ => encode_varint(value, self),
        }
    }

    fn nested(&mut self, _len: usize, write: impl FnOnce(&mut Self)) {
        write(self);
    }
}

/// A protobuf message, written field by field into either sink.
trait Encode {
    fn encode<S: Sink>(&self, out: &mut S);

    /// Its length: counted, unless the message keeps it.
    fn encoded_len(&self) -> usize {
        let mut length = Counter(0);
        self.encode(&mut length);
        length.0
    }
}

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;
const FIXED32: u32 = 5;

fn tag<S: Sink>(out: &mut S, field: u32, wire_type: u32) {
    out.varint(u64::from(field << 3 | wire_type));
}

fn bytes<S: Sink>(out: &mut S, field: u32, value: &[u8]) {
    tag(out, field, LENGTH_DELIMITED);
    out.varint(value.len() as u64);
    out.put(value);
}

/// A string field; proto3 leaves an empty one out (not so in a `oneof`).
fn string<S: Sink>(out: &mut S, field: u32, value: &str) {
    if !value.is_empty() {
        bytes(out, field, value.as_bytes());
    }
}

fn uint<S: Sink>(out: &mut S, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, VARINT);
        out.varint(value);
    }
}

fn fixed64<S: Sink>(out: &mut S, field: u32, value: u64) {
    if value != 0 {
        tag(out, field, FIXED64);
        out.put(&value.to_le_bytes());
    }
}

fn fixed32<S: Sink>(out: &mut S, field: u32, value: u32) {
    if value != 0 {
        tag(out, field, FIXED32);
        out.put(&value.to_le_bytes());
    }
}

/// A nested message, always written (prost's `Some`, even when empty).
fn message<S: Sink>(out: &mut S, field: u32, value: &impl Encode) {
    let length = value.encoded_len();
    tag(out, field, LENGTH_DELIMITED);
    out.varint(length as u64);
    out.nested(length, |out| value.encode(out));
}

fn attributes<S: Sink>(out: &mut S, field: u32, attributes: &[KeyValue]) {
    for attribute in attributes {
        message(
            out,
            field,
            &Attribute(attribute.key.as_str(), &attribute.value),
        );
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// OTLP's span flags: the W3C trace flags, and whether the parent (or a
/// link's span) is remote.
fn flags(trace_flags: u8, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

/// `ExportTraceServiceRequest`.
struct Request<'a>(ResourceSpans<'a>);

impl Encode for Request<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        message(out, 1, &self.0);
    }
}

/// `ResourceSpans`, its `Resource` encoded beforehand.
struct ResourceSpans<'a> {
    resource: &'a [u8],
    schema_url: &'a str,
    scopes: &'a [(&'a InstrumentationScope, Vec<Span<'a>>)],
}

impl Encode for ResourceSpans<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        bytes(out, 1, self.resource);
        for (scope, spans) in self.scopes {
            message(out, 2, &ScopeSpans(scope, spans));
        }
        string(out, 3, self.schema_url);
    }
}

/// `ScopeSpans`.
struct ScopeSpans<'a>(&'a InstrumentationScope, &'a [Span<'a>]);

impl Encode for ScopeSpans<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        let ScopeSpans(scope, spans) = self;
        message(out, 1, &Scope(scope));
        for span in *spans {
            message(out, 2, span);
        }
        string(out, 3, scope.schema_url().unwrap_or_default());
    }
}

/// `InstrumentationScope`.
struct Scope<'a>(&'a InstrumentationScope);

impl Encode for Scope<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        string(out, 1, self.0.name());
        string(out, 2, self.0.version().unwrap_or_default());
        for attribute in self.0.attributes() {
            message(out, 3, &Attribute(attribute.key.as_str(), &attribute.value));
        }
    }
}

/// `Span`, with its length counted once: the messages around it are
/// counted before they are written, and they would count it again each.
struct Span<'a> {
    data: &'a SpanData,
    length: usize,
}

impl<'a> Span<'a> {
    fn new(data: &'a SpanData) -> Self {
        let mut span = Span { data, length: 0 };
        let mut length = Counter(0);
        span.encode(&mut length);
        span.length = length.0;
        span
    }
}

impl Encode for Span<'_> {
    fn encoded_len(&self) -> usize {
        self.length
    }

    fn encode<S: Sink>(&self, out: &mut S) {
        let span = self.data;
        let context = &span.span_context;
        bytes(out, 1, &context.trace_id().to_bytes());
        bytes(out, 2, &context.span_id().to_bytes());
        string(out, 3, &context.trace_state().header());
        if span.parent_span_id != SpanId::INVALID {
            bytes(out, 4, &span.parent_span_id.to_bytes());
        }
        string(out, 5, &span.name);
        uint(out, 6, span_kind(&span.span_kind));
        fixed64(out, 7, nanos(span.start_time));
        fixed64(out, 8, nanos(span.end_time));
        attributes(out, 9, &span.attributes);
        uint(out, 10, u64::from(span.dropped_attributes_count));
        for event in span.events.iter() {
            message(out, 11, &Event(event));
        }
        uint(out, 12, u64::from(span.events.dropped_count));
        for link in span.links.iter() {
            message(out, 13, &Link(link));
        }
        uint(out, 14, u64::from(span.links.dropped_count));
        message(out, 15, &SpanStatus(&span.status));
        fixed32(
            out,
            16,
            flags(context.trace_flags().to_u8(), span.parent_span_is_remote),
        );
    }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Span.Event`.
struct Event<'a>(&'a opentelemetry::trace::Event);

impl Encode for Event<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        fixed64(out, 1, nanos(self.0.timestamp));
        string(out, 2, &self.0.name);
        attributes(out, 3, &self.0.attributes);
        uint(out, 4, u64::from(self.0.dropped_attributes_count));
    }
}

/// `Span.Link`.
struct Link<'a>(&'a opentelemetry::trace::Link);

impl Encode for Link<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        let context = &self.0.span_context;
        bytes(out, 1, &context.trace_id().to_bytes());
        bytes(out, 2, &context.span_id().to_bytes());
        string(out, 3, &context.trace_state().header());
        attributes(out, 4, &self.0.attributes);
        uint(out, 5, u64::from(self.0.dropped_attributes_count));
        fixed32(
            out,
            6,
            flags(context.trace_flags().to_u8(), context.is_remote()),
        );
    }
}

/// `Status`.
struct SpanStatus<'a>(&'a Status);

impl Encode for SpanStatus<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        let code = match self.0 {
            Status::Unset => 0,
            Status::Ok => 1,
            Status::Error { description } => {
                string(out, 2, description);
                2
            }
        };
        uint(out, 3, code);
    }
}

/// `KeyValue`.
struct Attribute<'a>(&'a str, &'a Value);

impl Encode for Attribute<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        string(out, 1, self.0);
        message(out, 2, &AnyValue::of(self.1));
    }
}

/// `AnyValue`: a `oneof`, so a default value is still written.
enum AnyValue<'a> {
    String(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a Array),
}

impl<'a> AnyValue<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Bool(b) => AnyValue::Bool(*b),
            Value::I64(i) => AnyValue::Int(*i),
            Value::F64(f) => AnyValue::Double(*f),
            Value::String(s) => AnyValue::String(Cow::Borrowed(s.as_str())),
            Value::Array(array) => AnyValue::Array(array),
            // A kind added to the API later: as text, never lost.
            other => AnyValue::String(other.as_str()),
        }
    }
}

impl Encode for AnyValue<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        match *self {
            AnyValue::String(ref s) => bytes(out, 1, s.as_bytes()),
            AnyValue::Bool(b) => {
                tag(out, 2, VARINT);
                out.varint(u64::from(b));
            }
            AnyValue::Int(i) => {
                tag(out, 3, VARINT);
                out.varint(i as u64);
            }
            AnyValue::Double(f) => {
                tag(out, 4, FIXED64);
                out.put(&f.to_bits().to_le_bytes());
            }
            AnyValue::Array(array) => message(out, 5, &ArrayValue(array)),
        }
    }
}

/// `ArrayValue`.
struct ArrayValue<'a>(&'a Array);

impl Encode for ArrayValue<'_> {
    fn encode<S: Sink>(&self, out: &mut S) {
        match self.0 {
            Array::Bool(values) => {
                for value in values {
                    message(out, 1, &AnyValue::Bool(*value));
                }
            }
            Array::I64(values) => {
                for value in values {
                    message(out, 1, &AnyValue::Int(*value));
                }
            }
            Array::F64(values) => {
                for value in values {
                    message(out, 1, &AnyValue::Double(*value));
                }
            }
            Array::String(values) => {
                for value in values {
                    message(out, 1, &AnyValue::String(Cow::Borrowed(value.as_str())));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::{
        StringValue,
        trace::{Event as ApiEvent, Link as ApiLink, SpanContext, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    /// A client as comb builds them, with ring's provider.
    fn test_client() -> reqwest::Client {
        crate::tls::install_crypto_provider();
        reqwest::Client::new()
    }

    fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    /// Every kind of value the API has, defaults included (a `oneof` keeps
    /// `false`, `0` and `""`; proto3 drops them elsewhere).
    fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("text", "plugin said so"),
            KeyValue::new("empty", ""),
            KeyValue::new("", "no key"),
            KeyValue::new("no", false),
            KeyValue::new("yes", true),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", -42_i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from(""),
                ])),
            ),
            KeyValue::new("numbers", Value::Array(Array::I64(vec![1, -1, i64::MAX]))),
            KeyValue::new("doubles", Value::Array(Array::F64(vec![0.0, -1.5]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![false, true]))),
            KeyValue::new("nothing", Value::Array(Array::I64(vec![]))),
        ]
    }

    fn span(name: &str, scope: &InstrumentationScope) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        SpanData {
            span_context: context(0xabc, 0x1, false, ""),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_owned().into(),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn the_request_decodes_to_what_the_otlp_crate_builds() {
        let comb = InstrumentationScope::builder("comb").build();
        let plugin = InstrumentationScope::builder("home_activities")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("plugin.digest", "sha256:00")])
            .build();
        let mut server = span("GET /api/activities/home", &comb);
        server.span_kind = SpanKind::Server;
        server.parent_span_id = SpanId::from(0x99);
        server.parent_span_is_remote = true;
        server.span_context = context(0xabc, 0x2, false, "vendor=value,other=1");
        server.attributes = every_value();
        server.dropped_attributes_count = 3;
        server.status = Status::error("Internal Server Error");
        let mut guest = span("home-activites-mock-data", &plugin);
        guest.parent_span_id = SpanId::from(0x2);
        guest.attributes = vec![KeyValue::new("app.result_length", 3_i64)];
        guest.events.events.push(ApiEvent::new(
            "exception",
            UNIX_EPOCH + Duration::from_secs(1_700_000_001),
            every_value(),
            2,
        ));
        guest.events.dropped_count = 1;
        guest.links.links.push(ApiLink::new(
            context(0xdef, 0x7, true, "k=v"),
            vec![KeyValue::new("link.kind", "follows")],
            1,
        ));
        guest.links.dropped_count = 4;
        guest.status = Status::Ok;
        let mut client = span("GET", &comb);
        client.span_kind = SpanKind::Client;
        client.span_context = context(0xabc, 0x3, false, "");
        let spans = vec![server, guest, client];
        let resource = Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "comb"),
                    KeyValue::new("host.cores", 2_i64),
                ],
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .build();

        let mut exporter = HttpSpanExporter::new(
            &OtlpTarget {
                url: "http://127.0.0.1:4318/v1/traces".into(),
                protocol: crate::config::OtlpProtocol::HttpProtobuf,
                headers: vec![],
                timeout: Duration::from_secs(1),
                gzip: false,
                certificate: None,
            },
            test_client(),
        )
        .unwrap();
        exporter.set_resource(&resource);
        let ours = export_request(&spans, &exporter.resource, &exporter.resource_schema_url);

        let theirs = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).unwrap();
        assert_eq!(decoded, theirs);
        // Not only equal once decoded: the same bytes as prost writes.
        assert_eq!(ours, theirs.encode_to_vec());
    }

    #[test]
    fn debug_shows_header_names_never_their_values() {
        let exporter = HttpSpanExporter::new(
            &OtlpTarget {
                url: "http://127.0.0.1:4318/v1/traces".into(),
                protocol: crate::config::OtlpProtocol::HttpProtobuf,
                headers: vec![("x-honeycomb-team".into(), "hc-key-123".into())],
                timeout: Duration::from_secs(1),
                gzip: false,
                certificate: None,
            },
            test_client(),
        )
        .unwrap();
        let shown = format!("{exporter:?}");
        assert!(shown.contains("x-honeycomb-team"), "{shown}");
        assert!(!shown.contains("hc-key-123"), "{shown}");
    }
}
