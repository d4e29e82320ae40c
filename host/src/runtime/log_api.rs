//! The host side of the WIT `log` interface: a plugin's log lines as
//! events on its current span and as lines in comb's own log, bounded per
//! call.

use opentelemetry::{KeyValue, trace::TraceContextExt};
use wasmtime::component::{HasData, Linker};

use super::{
    bindings::comb::plugin::{
        log::{self as wit, Level},
        tracing::KeyValue as WitKeyValue,
    },
    span_api::{self, SpanApiCtx},
};

/// The log target of plugins' lines in comb's log.
pub const GUEST_LOG: &str = "comb::guest";

/// Lines one call may log.
pub const MAX_LINES: usize = 256;

/// Bytes (messages and field values) one call may log.
pub const MAX_BYTES: usize = 64 * 1024;

/// Per-call state: what was logged, what was dropped.
pub struct GuestLog {
    plugin: String,
    lines: usize,
    bytes: usize,
    dropped: u64,
}

impl GuestLog {
    /// Nothing logged yet, by `plugin`.
    pub fn new(plugin: &str) -> Self {
        GuestLog {
            plugin: plugin.to_owned(),
            lines: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    /// Lines past the limits, counted instead of kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// What the log functions work on: the call's log state and the span
/// API's, for the current span.
pub struct LogApiView<'a> {
    /// This call's log state.
    pub log: &'a mut GuestLog,
    /// This call's spans.
    pub spans: &'a SpanApiCtx,
}

struct LogApi;

impl HasData for LogApi {
    type Data<'a> = LogApiView<'a>;
}

/// Adds the `comb:plugin/log` import to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> LogApiView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, LogApi>(linker, view)
}

impl wit::Host for LogApiView<'_> {
    fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let fields: Vec<KeyValue> = span_api::key_values(fields).collect();
        let size = message.len()
            + fields
                .iter()
                .map(|kv| kv.key.as_str().len() + kv.value.as_str().len())
                .sum::<usize>();
        if self.log.lines >= MAX_LINES || self.log.bytes + size > MAX_BYTES {
            self.log.dropped += 1;
            return Ok(());
        }
        self.log.lines += 1;
        self.log.bytes += size;

        let severity = severity(level);
        let span = self.spans.current().span();
        let context = span.span_context().clone();
        let rendered = fields
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" ");
        let mut attributes = vec![
            KeyValue::new("log.severity", severity),
            KeyValue::new("log.message", message.clone()),
        ];
        attributes.extend(fields);
        span.add_event("log", attributes);

        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: GUEST_LOG,
                    $level,
                    plugin = %self.log.plugin,
                    trace_id = %context.trace_id(),
                    span_id = %context.span_id(),
                    fields = %rendered,
                    "{message}"
                )
            };
        }
        match level {
            Level::Trace => line!(tracing::Level::TRACE),
            Level::Debug => line!(tracing::Level::DEBUG),
            Level::Info => line!(tracing::Level::INFO),
            Level::Warn => line!(tracing::Level::WARN),
            Level::Error => line!(tracing::Level::ERROR),
        }
        Ok(())
    }
}

fn severity(level: Level) -> &'static str {
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::{Context, global};

    use super::*;
    use crate::runtime::bindings::comb::plugin::tracing::Value;

    fn log(view: &mut LogApiView<'_>, message: &str, value: &str) {
        wit::Host::log(
            view,
            Level::Info,
            message.to_owned(),
            vec![WitKeyValue {
                key: "app.value".into(),
                value: Value::String(value.to_owned()),
            }],
        )
        .unwrap();
    }

    #[test]
    fn lines_and_bytes_are_bounded_per_call_counting_field_values() {
        let spans = SpanApiCtx::new(Arc::new(global::tracer("test")), Context::new(), "p");
        let mut state = GuestLog::new("p");
        let mut view = LogApiView {
            log: &mut state,
            spans: &spans,
        };
        // A short message with a huge field value is over the byte bound.
        log(&mut view, "big", &"x".repeat(MAX_BYTES));
        assert_eq!(view.log.dropped(), 1);
        for _ in 0..MAX_LINES + 10 {
            log(&mut view, "line", "v");
        }
        assert_eq!(view.log.lines, MAX_LINES);
        assert_eq!(view.log.dropped(), 11);
    }
}
