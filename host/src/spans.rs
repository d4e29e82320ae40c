//! comb's span model: which spans a request produces, their names, kinds
//! and attributes. Every request is one trace:
//!
//! ```text
//! GET /api/activities/home          SERVER    http.* semconv, plugin.name
//! └─ invoke home_activities         INTERNAL  plugin.*, faas.*, timings
//!    └─ home-activites-mock-data    INTERNAL  the plugin's own (app.now, ...)
//!       └─ GET                      CLIENT    an outgoing call: http.*, url.full, server.*
//! ```
//!
//! 4xx responses leave the server span's status unset (the client erred);
//! 5xx set it to Error with `error.type`. A trap sets the invocation span
//! to Error with a low-cardinality `error.type` and an `exception` event.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use opentelemetry::{
    Context, KeyValue, StringValue,
    global::{self, BoxedTracer},
    propagation::{Extractor, Injector},
    trace::{
        SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        Tracer, TracerProvider as _,
    },
};

/// Attribute keys: OTel semantic conventions where they exist, comb's own
/// `plugin.*` keys otherwise.
pub(crate) mod attributes {
    pub(crate) use opentelemetry_semantic_conventions::attribute::{
        CLIENT_ADDRESS, ERROR_TYPE, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE, EXCEPTION_TYPE,
        FAAS_COLDSTART, FAAS_TRIGGER, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE,
        NETWORK_PROTOCOL_VERSION, SERVER_ADDRESS, SERVER_PORT, URL_FULL, URL_PATH, URL_QUERY,
        URL_SCHEME, USER_AGENT_ORIGINAL,
    };

    /// The plugin's name from its manifest; on every span of a request that
    /// reached a plugin, so one Honeycomb query groups plugins side by side.
    pub(crate) const PLUGIN_NAME: &str = "plugin.name";
    /// The plugin's version from its manifest.
    pub(crate) const PLUGIN_VERSION: &str = "plugin.version";
    /// The sha256 of the plugin's `.wasm` file, hex.
    pub(crate) const PLUGIN_DIGEST: &str = "plugin.digest";
    /// Milliseconds spent creating the store and instance (f64).
    pub(crate) const PLUGIN_INSTANTIATE_MS: &str = "plugin.instantiate_ms";
    /// Milliseconds spent in the guest's `handle` call (f64).
    pub(crate) const PLUGIN_CALL_MS: &str = "plugin.call_ms";
    /// Which call of its instance a call was (1: a fresh instance); only on
    /// plugins that reuse instances.
    pub(crate) const PLUGIN_INSTANCE_CALL: &str = "plugin.instance.call";
    /// On `plugin.load`: the plugin file's path.
    pub(crate) const PLUGIN_FILE: &str = "plugin.file";
    /// On `plugin.load` of a plugin from a registry: `REF@sha256:...`,
    /// the manifest it was pulled as.
    pub(crate) const PLUGIN_ARTIFACT: &str = "plugin.artifact";
    /// On `plugin.load`: milliseconds spent compiling, or reading the cache.
    pub(crate) const PLUGIN_COMPILE_MS: &str = "plugin.compile_ms";
    /// On `plugin.load`: whether the compiled code came from the cache.
    pub(crate) const PLUGIN_CACHE_HIT: &str = "plugin.cache_hit";
    /// On `plugin.load`: `loaded` or `rejected`.
    pub(crate) const PLUGIN_LOAD_OUTCOME: &str = "plugin.load.outcome";
    /// The call's wall-clock deadline, ms (i64).
    pub(crate) const PLUGIN_LIMIT_DEADLINE_MS: &str = "plugin.limit.deadline_ms";
    /// The call's linear-memory cap, bytes (i64).
    pub(crate) const PLUGIN_LIMIT_MEMORY_BYTES: &str = "plugin.limit.memory_bytes";
    /// The call's fuel, when metering is on (i64).
    pub(crate) const PLUGIN_LIMIT_FUEL: &str = "plugin.limit.fuel";
    /// How many calls of the plugin may run at once (i64).
    pub(crate) const PLUGIN_LIMIT_MAX_CONCURRENCY: &str = "plugin.limit.max_concurrency";
    /// Which limit ended the call: `deadline`, `memory`, `fuel`,
    /// `concurrency`, `request_body` or `response_body`.
    pub(crate) const PLUGIN_LIMIT_HIT: &str = "plugin.limit.hit";
    /// Milliseconds executing guest code, host calls excluded (f64).
    pub(crate) const PLUGIN_GUEST_CPU_MS: &str = "plugin.guest_cpu_ms";
    /// The most linear memory the instance held, bytes (i64).
    pub(crate) const PLUGIN_MEMORY_PEAK_BYTES: &str = "plugin.memory.peak_bytes";
    /// Fuel consumed, when metering is on (i64).
    pub(crate) const PLUGIN_FUEL_CONSUMED: &str = "plugin.fuel.consumed";
    /// Log lines past the per-call limits, counted instead of kept.
    pub(crate) const PLUGIN_LOG_DROPPED: &str = "plugin.log.dropped";
    /// Guest spans, attributes and events past the per-call telemetry
    /// limits, counted instead of kept.
    pub(crate) const PLUGIN_TELEMETRY_DROPPED: &str = "plugin.telemetry.dropped";
    /// Times the guest tried to set comb's own keys (`plugin.*`, `faas.*`,
    /// and on the invocation span `error.type`, `http.*`) or to rename the
    /// invocation span; refused.
    pub(crate) const PLUGIN_TELEMETRY_REFUSED: &str = "plugin.telemetry.refused";
}

/// How every invocation span's name starts (`invoke {plugin.name}`): what
/// per-plugin comparisons select on, so comb's alone.
pub(crate) const INVOCATION_SPAN_PREFIX: &str = "invoke ";

/// The instrumentation scope of comb's own spans.
pub(crate) const TRACER_NAME: &str = "comb";

/// The tracer for comb's own (server and invocation) spans.
pub fn host_tracer() -> BoxedTracer {
    global::tracer(TRACER_NAME)
}

/// The tracer for one plugin's spans, scoped to its name and version, as
/// the seed's `trace.get_tracer("home.activities")` was.
pub(crate) fn plugin_tracer(name: &str, version: &str) -> BoxedTracer {
    let scope = opentelemetry::InstrumentationScope::builder(name.to_owned())
        .with_version(version.to_owned())
        .build();
    global::tracer_provider().tracer_with_scope(scope)
}

/// The trace context a request carries (W3C `traceparent`, baggage), per
/// the global propagator.
pub(crate) fn extract(headers: &http::HeaderMap) -> Context {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }
    global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)))
}

/// Writes the trace context of `cx` into `headers` (replacing what was
/// there) with the global propagator: `traceparent`, and `X-Amzn-Trace-Id`
/// when X-Ray is on.
pub(crate) fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    struct Headers<'a>(&'a mut http::HeaderMap);
    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut Headers(headers))
    })
}

/// A context whose parent is remote and not sampled: a span started under
/// it, and every span under that one, is dropped by the parent-based
/// samplers (the OTel default), so the work goes untraced.
pub(crate) fn unsampled_parent() -> Context {
    let parent = SpanContext::new(
        TraceId::from_bytes([1; 16]),
        SpanId::from_bytes([1; 8]),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(parent)
}

/// What the server span records about an incoming request.
pub(crate) struct IncomingRequest<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub version: http::Version,
    pub headers: &'a http::HeaderMap,
    /// The peer's IP address (formatted once per connection).
    pub client_address: Option<&'a StringValue>,
    /// The matched route pattern, when one matched (shared, not copied).
    pub route: Option<&'a Arc<str>>,
    /// The plugin serving the route, when one matched (shared, not copied).
    pub plugin: Option<&'a StringValue>,
}

/// Starts the SERVER span for a request, child of the propagated `parent`.
/// Named `"{METHOD} {route}"`, or `"{METHOD}"` when no route matched (a raw
/// path would make span names unbounded).
///
/// With no tracer (OpenTelemetry off) the request runs in `parent`, which
/// is what the no-op tracer's span would carry, without building the name
/// and attributes it would throw away.
pub(crate) fn start_server_span(
    tracer: Option<&BoxedTracer>,
    parent: &Context,
    request: &IncomingRequest<'_>,
) -> Context {
    let Some(tracer) = tracer else {
        return parent.clone();
    };
    let method = known_method(request.method);
    let name = match request.route {
        Some(route) => [method, " ", route].concat(),
        None => method.to_owned(),
    };
    // Room for every attribute below: no regrowth on the request path.
    let mut attributes = Vec::with_capacity(11);
    attributes.extend([
        KeyValue::new(attributes::HTTP_REQUEST_METHOD, method),
        KeyValue::new(attributes::URL_PATH, request.uri.path().to_owned()),
        KeyValue::new(attributes::URL_SCHEME, "http"),
        KeyValue::new(
            attributes::NETWORK_PROTOCOL_VERSION,
            protocol_version(request.version),
        ),
    ]);
    if let Some(query) = request.uri.query() {
        attributes.push(KeyValue::new(attributes::URL_QUERY, query.to_owned()));
    }
    if let Some((host, port)) = host_and_port(request.headers) {
        attributes.push(KeyValue::new(attributes::SERVER_ADDRESS, host));
        if let Some(port) = port {
            attributes.push(KeyValue::new(attributes::SERVER_PORT, i64::from(port)));
        }
    }
    if let Some(agent) = request
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(
            attributes::USER_AGENT_ORIGINAL,
            agent.to_owned(),
        ));
    }
    if let Some(address) = request.client_address {
        attributes.push(KeyValue::new(attributes::CLIENT_ADDRESS, address.clone()));
    }
    if let Some(route) = request.route {
        attributes.push(KeyValue::new(
            attributes::HTTP_ROUTE,
            StringValue::from(route.clone()),
        ));
    }
    if let Some(plugin) = request.plugin {
        attributes.push(KeyValue::new(attributes::PLUGIN_NAME, plugin.clone()));
    }
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// Records the response status and ends the server span. `error_type`
/// names the failure of a 5xx (else the status code does, per semconv).
pub(crate) fn end_server_span(cx: &Context, status: StatusCode, error_type: Option<&str>) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        attributes::HTTP_RESPONSE_STATUS_CODE,
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        let error_type = error_type.map_or_else(|| status.as_u16().to_string(), str::to_owned);
        span.set_attribute(KeyValue::new(attributes::ERROR_TYPE, error_type));
        span.set_status(Status::error(
            status.canonical_reason().unwrap_or("server error"),
        ));
    }
    span.end();
}

/// Who a plugin is, as its spans, logs and metrics report it. Built once
/// at load; the strings are shared, so putting them on every request's
/// spans and measurements copies none of them.
#[derive(Debug, Clone)]
pub(crate) struct PluginIdentity {
    /// `plugin.name`.
    pub name: StringValue,
    /// `plugin.version`.
    pub version: StringValue,
    /// `plugin.digest`.
    pub digest: StringValue,
    /// Its invocation span's name, `invoke {plugin.name}`.
    pub invocation_span: String,
    /// Its call metrics' attributes: `plugin.name`, `plugin.version` (the
    /// two alone for instantiation and cold starts) and `faas.trigger`.
    pub call_metric_attributes: [KeyValue; 3],
}

impl PluginIdentity {
    /// The identity of plugin `name` at `version`, built from `digest`.
    pub(crate) fn new(name: &str, version: &str, digest: &str) -> Self {
        let shared = |text: &str| StringValue::from(std::sync::Arc::<str>::from(text));
        let (name_value, version) = (shared(name), shared(version));
        PluginIdentity {
            call_metric_attributes: [
                KeyValue::new(attributes::PLUGIN_NAME, name_value.clone()),
                KeyValue::new(attributes::PLUGIN_VERSION, version.clone()),
                KeyValue::new(attributes::FAAS_TRIGGER, "http"),
            ],
            name: name_value,
            version,
            digest: shared(digest),
            invocation_span: [INVOCATION_SPAN_PREFIX, name].concat(),
        }
    }
}

/// Records on the server span that a limit comb checks itself (request or
/// response body size, concurrency) ended the request before or after the
/// plugin ran.
pub(crate) fn record_limit_hit(cx: &Context, limit: Option<&'static str>) {
    if let Some(limit) = limit {
        cx.span()
            .set_attribute(KeyValue::new(attributes::PLUGIN_LIMIT_HIT, limit));
    }
}

/// A time as RFC 3339 in UTC, for reports.
pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The trace id of the span in `cx`, hex, for log lines.
pub(crate) fn trace_id(cx: &Context) -> String {
    cx.span().span_context().trace_id().to_string()
}

/// The `traceresponse` header value for the span in `cx`,
/// `00-{trace id}-{span id}-{flags}`; `None` when tracing is off.
pub(crate) fn traceresponse(cx: &Context) -> Option<http::HeaderValue> {
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    // Into one buffer: `format!` with the ids' `{:032x}` padding was ~0.5 %
    // of a request's CPU, on every request.
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let hex = |bytes: &[u8], into: &mut [u8]| hex::encode_to_slice(bytes, into).ok();
    hex(&context.trace_id().to_bytes(), &mut value[3..35])?;
    hex(&context.span_id().to_bytes(), &mut value[36..52])?;
    hex(&[context.trace_flags().to_u8()], &mut value[53..])?;
    http::HeaderValue::from_bytes(&value).ok()
}

/// A duration in milliseconds, as comb's `*_ms` attributes carry it.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Starts the CLIENT span of a plugin's outgoing HTTP call, under the
/// guest's current span `parent`: `{METHOD}` with HTTP client semantic
/// conventions.
pub(crate) fn start_client_span(
    parent: &Context,
    method: &http::Method,
    uri: &http::Uri,
) -> Context {
    let port = port_of(uri);
    let method = known_method(method);
    let tracer = host_tracer();
    let span = tracer
        .span_builder(method)
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new(attributes::HTTP_REQUEST_METHOD, method),
            KeyValue::new(attributes::URL_FULL, uri.to_string()),
            KeyValue::new(
                attributes::SERVER_ADDRESS,
                uri.host().unwrap_or_default().to_owned(),
            ),
            KeyValue::new(attributes::SERVER_PORT, i64::from(port)),
        ])
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// The port `uri` reaches: its own, else its scheme's.
pub(crate) fn port_of(uri: &http::Uri) -> u16 {
    uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    })
}

/// Ends a CLIENT span: with the response's status (4xx and 5xx are errors
/// for a client), or with a failure's `error.type` and description.
pub(crate) fn end_client_span(cx: &Context, outcome: Result<StatusCode, (&'static str, String)>) {
    let span = cx.span();
    match outcome {
        Ok(status) => {
            span.set_attribute(KeyValue::new(
                attributes::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
            if status.is_client_error() || status.is_server_error() {
                span.set_attribute(KeyValue::new(
                    attributes::ERROR_TYPE,
                    status.as_str().to_owned(),
                ));
                span.set_status(Status::error(""));
            }
        }
        Err((error_type, description)) => {
            span.set_attribute(KeyValue::new(attributes::ERROR_TYPE, error_type));
            span.set_status(Status::error(description));
        }
    }
    span.end();
}

/// The method as semconv wants it: one of the known methods, else `_OTHER`
/// (so a client cannot blow up the attribute's cardinality).
pub(crate) fn known_method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn host_and_port(headers: &http::HeaderMap) -> Option<(String, Option<u16>)> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    Some((authority.host().to_owned(), authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceresponse_is_the_w3c_header_of_the_span() {
        let span = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(span);
        assert_eq!(
            traceresponse(&cx).unwrap(),
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
        );
        assert!(traceresponse(&Context::new()).is_none());
    }
}
