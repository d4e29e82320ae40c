//! The invocation span: started and ended here, where the plugin (its
//! identity and limits) and the call's outcome are both in view, so the
//! span model in [`crate::spans`] needs nothing from the runtime.

use opentelemetry::{
    Context, KeyValue,
    global::BoxedTracer,
    trace::{SpanKind, Status, TraceContextExt, Tracer},
};

use crate::{
    limits::Limits,
    runtime::{CallStats, InvokeError},
    spans::{PluginIdentity, attributes, millis},
};

/// Starts the invocation span around instantiating and calling a plugin:
/// `invoke {plugin.name}`, a stable per-plugin name to group by. With no
/// tracer (OpenTelemetry off), the call runs in `parent`, as the server
/// span does.
pub(crate) fn start_invocation_span(
    tracer: Option<&BoxedTracer>,
    parent: &Context,
    plugin: &PluginIdentity,
    limits: &Limits,
    coldstart: bool,
) -> Context {
    let Some(tracer) = tracer else {
        return parent.clone();
    };
    let mut attributes = vec![
        KeyValue::new(attributes::PLUGIN_NAME, plugin.name.clone()),
        KeyValue::new(attributes::PLUGIN_VERSION, plugin.version.clone()),
        KeyValue::new(attributes::PLUGIN_DIGEST, plugin.digest.clone()),
        KeyValue::new(attributes::FAAS_TRIGGER, "http"),
        KeyValue::new(attributes::FAAS_COLDSTART, coldstart),
        KeyValue::new(
            attributes::PLUGIN_LIMIT_DEADLINE_MS,
            limits.deadline.as_millis() as i64,
        ),
        KeyValue::new(
            attributes::PLUGIN_LIMIT_MEMORY_BYTES,
            limits.memory_bytes as i64,
        ),
        KeyValue::new(
            attributes::PLUGIN_LIMIT_MAX_CONCURRENCY,
            limits.max_concurrency as i64,
        ),
    ];
    if let Some(fuel) = limits.fuel {
        attributes.push(KeyValue::new(attributes::PLUGIN_LIMIT_FUEL, fuel as i64));
    }
    let span = tracer
        .span_builder(plugin.invocation_span.clone())
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// Records what the call took and used, how it failed if it did, and ends
/// the invocation span.
pub(crate) fn end_invocation_span(cx: &Context, stats: &CallStats, failure: Option<&InvokeError>) {
    let span = cx.span();
    span.set_attributes([
        KeyValue::new(attributes::PLUGIN_INSTANTIATE_MS, millis(stats.instantiate)),
        KeyValue::new(attributes::PLUGIN_CALL_MS, millis(stats.call)),
        KeyValue::new(attributes::PLUGIN_GUEST_CPU_MS, millis(stats.guest_cpu)),
        KeyValue::new(
            attributes::PLUGIN_MEMORY_PEAK_BYTES,
            stats.memory_peak as i64,
        ),
    ]);
    if let Some(fuel) = stats.fuel_consumed {
        span.set_attribute(KeyValue::new(attributes::PLUGIN_FUEL_CONSUMED, fuel as i64));
    }
    if let Some(call) = stats.instance_call {
        span.set_attribute(KeyValue::new(
            attributes::PLUGIN_INSTANCE_CALL,
            i64::from(call),
        ));
    }
    for (key, count) in [
        (attributes::PLUGIN_LOG_DROPPED, stats.log_dropped),
        (
            attributes::PLUGIN_TELEMETRY_DROPPED,
            stats.telemetry_dropped,
        ),
        (
            attributes::PLUGIN_TELEMETRY_REFUSED,
            stats.telemetry_refused,
        ),
    ] {
        if count > 0 {
            span.set_attribute(KeyValue::new(key, count as i64));
        }
    }
    if let Some(failure) = failure {
        if let Some(limit) = failure.limit_hit() {
            span.set_attribute(KeyValue::new(attributes::PLUGIN_LIMIT_HIT, limit));
        }
        // A plugin's `bad-request` is the client's error, like any 4xx.
        if !failure.is_client_error() {
            let error_type = failure.error_type();
            let message = failure.message();
            span.set_attribute(KeyValue::new(attributes::ERROR_TYPE, error_type));
            span.set_status(Status::error(message.clone()));
            if failure.is_trap() {
                let mut event = vec![
                    KeyValue::new(attributes::EXCEPTION_TYPE, error_type),
                    KeyValue::new(attributes::EXCEPTION_MESSAGE, message),
                ];
                if let Some(backtrace) = failure.backtrace() {
                    event.push(KeyValue::new(
                        attributes::EXCEPTION_STACKTRACE,
                        backtrace.to_string(),
                    ));
                }
                span.add_event("exception", event);
            }
        }
    }
    span.end();
}
