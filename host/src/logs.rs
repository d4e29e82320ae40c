//! Plugins' log lines as OpenTelemetry log records: what a guest logs
//! through comb's `log` interface, writes to stdout or stderr, or emits
//! through `wasi:otel` logs, once the runtime has admitted it under the
//! call's bounds, goes out over OTLP beside the line in comb's log and the
//! `log` event on the guest's span.
//!
//! The OTel API has no global logger provider (its log appenders are
//! handed one), so `telemetry` installs comb's here, once, when logs are
//! exported; each plugin gets a [`PluginLogger`] at load. With logs not
//! exported there is no provider, no logger, and nothing per line.

use std::sync::OnceLock;

use opentelemetry::{
    Array, InstrumentationScope, Key, KeyValue, StringValue, Value,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    trace::SpanContext,
};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};

use crate::spans::attributes;

/// comb's logger provider, when log records are exported.
static PROVIDER: OnceLock<SdkLoggerProvider> = OnceLock::new();

/// Makes `provider` the one plugins' loggers come from; the first call
/// wins (comb sets telemetry up once per process).
pub(crate) fn install(provider: SdkLoggerProvider) {
    let _ = PROVIDER.set(provider);
}

/// One plugin's logger: its records carry the plugin as their
/// instrumentation scope (name and version), which is how the export
/// queue knows whose share a record counts in, and `plugin.name` and
/// `plugin.version` as attributes, as its spans and metrics do.
#[derive(Debug)]
pub(crate) struct PluginLogger {
    logger: SdkLogger,
    identity: [(Key, AnyValue); 2],
}

impl PluginLogger {
    /// The logger for plugin `name` at `version`; `None` when logs are not
    /// exported.
    pub(crate) fn new(name: &StringValue, version: &StringValue) -> Option<Self> {
        let provider = PROVIDER.get()?;
        let scope = InstrumentationScope::builder(name.to_string())
            .with_version(version.to_string())
            .build();
        Some(PluginLogger {
            logger: provider.logger_with_scope(scope),
            identity: [
                (
                    Key::from_static_str(attributes::PLUGIN_NAME),
                    AnyValue::String(name.clone()),
                ),
                (
                    Key::from_static_str(attributes::PLUGIN_VERSION),
                    AnyValue::String(version.clone()),
                ),
            ],
        })
    }

    /// Emits one line: `severity`, `message` as the body, `fields` as
    /// attributes, in `context`'s trace and span.
    pub(crate) fn emit(
        &self,
        severity: Severity,
        message: &str,
        fields: &[KeyValue],
        context: &SpanContext,
    ) {
        let mut record = self.logger.create_log_record();
        record.set_timestamp(std::time::SystemTime::now());
        record.set_severity_number(severity);
        record.set_severity_text(severity.name());
        record.set_body(AnyValue::String(message.to_owned().into()));
        record.add_attributes(self.identity.iter().cloned());
        record.add_attributes(
            fields
                .iter()
                .map(|kv| (kv.key.clone(), any_value(&kv.value))),
        );
        if context.is_valid() {
            record.set_trace_context(
                context.trace_id(),
                context.span_id(),
                Some(context.trace_flags()),
            );
        }
        self.logger.emit(record);
    }
}

/// An attribute's value as a log record holds it.
fn any_value(value: &Value) -> AnyValue {
    match value {
        Value::Bool(v) => AnyValue::Boolean(*v),
        Value::I64(v) => AnyValue::Int(*v),
        Value::F64(v) => AnyValue::Double(*v),
        Value::String(v) => AnyValue::String(v.clone()),
        Value::Array(Array::Bool(v)) => list(v, |b| AnyValue::Boolean(*b)),
        Value::Array(Array::I64(v)) => list(v, |i| AnyValue::Int(*i)),
        Value::Array(Array::F64(v)) => list(v, |f| AnyValue::Double(*f)),
        Value::Array(Array::String(v)) => list(v, |s| AnyValue::String(s.clone())),
        other => AnyValue::String(other.to_string().into()),
    }
}

fn list<T>(values: &[T], each: impl Fn(&T) -> AnyValue) -> AnyValue {
    AnyValue::ListAny(Box::new(values.iter().map(each).collect()))
}
