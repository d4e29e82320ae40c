//! A plugin's log: the lines it logs through the WIT `log` interface and
//! the lines it writes to stdout and stderr. Each line becomes a `log`
//! event on the guest's current span, a line in comb's own log (target
//! `comb::guest`) with the trace id, span id and plugin name, and, when
//! logs are exported, an OTLP log record in that span. A call may
//! log [`MAX_LINES`] lines and [`MAX_BYTES`] bytes; past that, lines are
//! counted (`plugin.log.dropped` on the invocation span), not kept.
//! Error-level lines also go, typed, to a [`GuestErrorSink`] when a
//! reporter (Rollbar) asked for them.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context as TaskContext, Poll},
};

use opentelemetry::{
    KeyValue, StringValue,
    logs::Severity,
    trace::{SpanContext, TraceContextExt},
};
use tokio::io::AsyncWrite;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::{
    cli::{IsTerminal, StdoutStream},
    p2::{OutputStream, Pollable, StreamResult},
};

use crate::logs::PluginLogger;

use super::{
    bindings::comb::plugin::{
        log::{self as wit, Level},
        tracing::KeyValue as WitKeyValue,
    },
    budget::ITEM_COST,
    span_api::{self, CurrentSpan},
};

/// The log target of plugins' lines in comb's log.
pub(crate) const GUEST_LOG: &str = "comb::guest";

/// Lines one call may log.
pub(crate) const MAX_LINES: usize = 256;

/// Bytes (messages and field values) one call may log.
pub(crate) const MAX_BYTES: usize = 64 * 1024;

/// The longest stdout or stderr line; a longer one is split, so a guest
/// that never writes a newline still costs bounded memory.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024;

/// How much of the guest's stderr is kept for the trap report (64 KiB):
/// the tail, where a panic message is.
pub(crate) const STDERR_TAIL: usize = 64 * 1024;

/// A plugin's error-level log line, as a reporter receives it.
#[derive(Debug, Clone)]
pub struct GuestErrorLine {
    /// The plugin that logged it.
    pub plugin: String,
    /// The message.
    pub message: String,
    /// Its fields, rendered `key=value ...`.
    pub fields: String,
    /// The trace it was logged in (hex).
    pub trace_id: String,
    /// The span it was logged on (hex).
    pub span_id: String,
}

/// Takes plugins' error-level lines (Rollbar, with `--rollbar-guest-errors`).
/// Called on the guest's thread, so it must never wait: it admits a line by
/// its plugin's own budget first and buffers only what it admitted, so one
/// plugin logging errors in a loop cannot crowd out another's.
pub trait GuestErrorSink: Send + Sync {
    /// One line, as it is logged.
    fn report(&self, line: GuestErrorLine);
}

/// Where plugins' error-level lines go besides comb's log; cheap to clone.
#[derive(Clone)]
pub struct GuestErrors(Arc<dyn GuestErrorSink>);

impl GuestErrors {
    /// Lines go to `sink`.
    pub fn new(sink: Arc<dyn GuestErrorSink>) -> Self {
        GuestErrors(sink)
    }

    fn send(&self, line: GuestErrorLine) {
        self.0.report(line);
    }
}

/// The semconv attribute naming the stream a line came from.
const LOG_IOSTREAM: &str = "log.iostream";

/// One call's log, shared by the `log` interface and the guest's stdio
/// streams; cheap to clone.
#[derive(Clone)]
pub(crate) struct GuestLog(Arc<Mutex<LogState>>);

struct LogState {
    plugin: StringValue,
    current: CurrentSpan,
    errors: Option<GuestErrors>,
    /// The plugin's logger, when logs are exported.
    logger: Option<Arc<PluginLogger>>,
    lines: usize,
    bytes: usize,
    dropped: u64,
    /// Unfinished lines, stdout's and stderr's.
    partial: [Vec<u8>; 2],
    stderr_tail: Vec<u8>,
}

impl GuestLog {
    /// Nothing logged yet by `plugin`, whose current span `current` follows;
    /// error lines also go to `errors`, every line to `logger`.
    pub(crate) fn new(
        plugin: StringValue,
        current: CurrentSpan,
        errors: Option<GuestErrors>,
        logger: Option<Arc<PluginLogger>>,
    ) -> Self {
        GuestLog(Arc::new(Mutex::new(LogState {
            plugin,
            current,
            errors,
            logger,
            lines: 0,
            bytes: 0,
            dropped: 0,
            partial: Default::default(),
            stderr_tail: Vec::new(),
        })))
    }

    /// Starts a reused instance's next call: nothing logged yet, lines go
    /// on `current`, and no earlier call's unfinished line or stderr is
    /// carried into it.
    pub(crate) fn next_call(&self, current: CurrentSpan) {
        let mut state = self.state();
        state.current = current;
        state.lines = 0;
        state.bytes = 0;
        state.dropped = 0;
        state.partial = Default::default();
        state.stderr_tail.clear();
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        // A panic while logging leaves nothing half-done worth refusing.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest's stdout (`Stdio::Stdout`) or stderr, for its WASI context.
    pub(crate) fn stream(&self, stdio: Stdio) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            stdio,
        }
    }

    /// Logs what is left of unfinished stdout and stderr lines; call once
    /// the guest has returned.
    pub(crate) fn finish(&self) {
        let mut state = self.state();
        for stdio in [Stdio::Stdout, Stdio::Stderr] {
            state.end_line(stdio);
        }
    }

    /// Logs a line on the guest's current span, as the `log` interface
    /// does.
    pub(crate) fn log(&self, level: Level, message: &str, fields: Vec<KeyValue>) {
        self.state().log(level, message, fields);
    }

    /// Logs a line as one of `context`'s span, a span comb does not hold
    /// (a guest's own, through `wasi:otel`), and returns its `log` event's
    /// attributes for the caller to put on that span; `None` past the
    /// bounds.
    pub(crate) fn line_for(
        &self,
        level: Level,
        message: &str,
        fields: Vec<KeyValue>,
        context: &SpanContext,
    ) -> Option<Vec<KeyValue>> {
        self.state().line(level, message, fields, context)
    }

    /// Lines past the limits, counted instead of kept.
    pub(crate) fn dropped(&self) -> u64 {
        self.state().dropped
    }

    /// The end of what the guest wrote to stderr, lossily decoded.
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.state().stderr_tail).into_owned()
    }
}

impl LogState {
    /// Logs a line on the guest's current span.
    fn log(&mut self, level: Level, message: &str, fields: Vec<KeyValue>) {
        let cx = self.current.get();
        let span = cx.span();
        if let Some(event) = self.line(level, message, fields, span.span_context()) {
            span.add_event("log", event);
        }
    }

    /// Logs a line as one of `context`'s span, and returns its `log`
    /// event's attributes for the caller to put on that span; `None` past
    /// the bounds.
    fn line(
        &mut self,
        level: Level,
        message: &str,
        fields: Vec<KeyValue>,
        context: &SpanContext,
    ) -> Option<Vec<KeyValue>> {
        // Each field pays a slot besides its bytes, as attributes do in the
        // telemetry budget: a line of thousands of empty fields is not free
        // (it becomes a span event and a log record of that many).
        let size = message.len()
            + fields
                .iter()
                .map(|kv| ITEM_COST + kv.key.as_str().len() + kv.value.as_str().len())
                .sum::<usize>();
        if self.lines >= MAX_LINES || self.bytes + size > MAX_BYTES {
            self.dropped += 1;
            return None;
        }
        self.lines += 1;
        self.bytes += size;

        if let Some(logger) = &self.logger {
            logger.emit(severity_number(level), message, &fields, context);
        }
        let rendered = fields
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join(" ");
        let mut attributes = vec![
            KeyValue::new("log.severity", severity(level)),
            KeyValue::new("log.message", message.to_owned()),
        ];
        attributes.extend(fields);

        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: GUEST_LOG,
                    $level,
                    plugin = %self.plugin,
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
            Level::Error => {
                line!(tracing::Level::ERROR);
                if let Some(errors) = &self.errors {
                    errors.send(GuestErrorLine {
                        plugin: self.plugin.to_string(),
                        message: message.to_owned(),
                        fields: rendered,
                        trace_id: context.trace_id().to_string(),
                        span_id: context.span_id().to_string(),
                    });
                }
            }
        }
        Some(attributes)
    }

    /// Splits what the guest wrote into lines and logs each finished one.
    fn write(&mut self, stdio: Stdio, mut bytes: &[u8]) {
        if stdio == Stdio::Stderr {
            self.stderr_tail.extend_from_slice(bytes);
            if self.stderr_tail.len() > 2 * STDERR_TAIL {
                let excess = self.stderr_tail.len() - STDERR_TAIL;
                self.stderr_tail.drain(..excess);
            }
        }
        while !bytes.is_empty() {
            let partial = &mut self.partial[stdio as usize];
            let newline = bytes.iter().position(|&b| b == b'\n');
            let end = newline.unwrap_or(bytes.len());
            let take = end.min(MAX_LINE_BYTES - partial.len());
            partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if newline == Some(take) {
                bytes = &bytes[1..];
                self.end_line(stdio);
            } else if partial.len() == MAX_LINE_BYTES {
                self.end_line(stdio);
            }
        }
    }

    fn end_line(&mut self, stdio: Stdio) {
        let line = std::mem::take(&mut self.partial[stdio as usize]);
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return;
        }
        let (level, name) = match stdio {
            Stdio::Stdout => (Level::Info, "stdout"),
            Stdio::Stderr => (Level::Warn, "stderr"),
        };
        self.log(level, line, vec![KeyValue::new(LOG_IOSTREAM, name)]);
    }
}

/// Which of the guest's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// Lines logged at INFO.
    Stdout = 0,
    /// Lines logged at WARN.
    Stderr = 1,
}

/// The guest's stdout or stderr: every write goes to its [`GuestLog`].
/// Writes never fail or block; past the limits, lines are only counted.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    log: GuestLog,
    stdio: Stdio,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.log.state().write(self.stdio, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.log.state().write(self.stdio, bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct LogApi;

impl HasData for LogApi {
    type Data<'a> = &'a mut GuestLog;
}

/// Adds the `comb:plugin/log` import to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> &mut GuestLog,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, LogApi>(linker, view)
}

impl wit::Host for GuestLog {
    fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let fields = span_api::key_values(fields).collect();
        GuestLog::log(self, level, &message, fields);
        Ok(())
    }
}

fn severity(level: Level) -> &'static str {
    severity_number(level).name()
}

/// The log data model's severity for a guest's level.
fn severity_number(level: Level) -> Severity {
    match level {
        Level::Trace => Severity::Trace,
        Level::Debug => Severity::Debug,
        Level::Info => Severity::Info,
        Level::Warn => Severity::Warn,
        Level::Error => Severity::Error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry::{Context, global};

    use super::*;
    use crate::runtime::{bindings::comb::plugin::tracing::Value, span_api::SpanApiCtx};

    fn guest_log() -> GuestLog {
        let spans = SpanApiCtx::new(
            Arc::new(global::tracer("test")),
            Context::new(),
            "p".into(),
            1,
        );
        GuestLog::new("p".into(), spans.current_span(), None, None)
    }

    fn log(log: &mut GuestLog, message: &str, value: &str) {
        wit::Host::log(
            log,
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
        let mut guest = guest_log();
        // A short message with a huge field value is over the byte bound.
        log(&mut guest, "big", &"x".repeat(MAX_BYTES));
        assert_eq!(guest.dropped(), 1);
        for _ in 0..MAX_LINES + 10 {
            log(&mut guest, "line", "v");
        }
        assert_eq!(guest.state().lines, MAX_LINES);
        assert_eq!(guest.dropped(), 11);
    }

    #[test]
    fn empty_fields_are_not_free() {
        let mut guest = guest_log();
        let empty = WitKeyValue {
            key: String::new(),
            value: Value::String(String::new()),
        };
        let fields = vec![empty; MAX_BYTES / ITEM_COST + 1];
        wit::Host::log(&mut guest, Level::Info, String::new(), fields).unwrap();
        assert_eq!(guest.dropped(), 1);
        assert_eq!(guest.state().lines, 0);
    }

    #[test]
    fn stdio_is_split_into_lines_bounded_in_length() {
        let guest = guest_log();
        let mut stdout = guest.stream(Stdio::Stdout);
        let mut stderr = guest.stream(Stdio::Stderr);
        // A line arriving in pieces is one line; blank lines are none.
        OutputStream::write(&mut stdout, "hel".into()).unwrap();
        OutputStream::write(&mut stdout, "lo\r\n\nwor".into()).unwrap();
        assert_eq!(guest.state().lines, 1);
        assert_eq!(guest.state().partial[0], b"wor");
        // A newline-free flood is split at MAX_LINE_BYTES, not buffered.
        let flood = vec![b'x'; 2 * MAX_LINE_BYTES + 1];
        OutputStream::write(&mut stderr, flood.into()).unwrap();
        assert_eq!(guest.state().lines, 3);
        assert_eq!(guest.state().partial[1].len(), 1);
        // The call's end logs what is left of both streams.
        guest.finish();
        assert_eq!(guest.state().lines, 5);
        assert!(guest.state().partial.iter().all(Vec::is_empty));
        assert_eq!(guest.stderr().len(), 2 * MAX_LINE_BYTES + 1);
    }

    #[test]
    fn a_reused_instance_s_next_call_starts_with_a_clean_log() {
        let mut guest = guest_log();
        let mut stderr = guest.stream(Stdio::Stderr);
        for _ in 0..MAX_LINES + 1 {
            log(&mut guest, "line", "v");
        }
        OutputStream::write(&mut stderr, "panicked at half a li".into()).unwrap();
        guest.next_call(guest_log().state().current.clone());
        // The stream the guest kept writes to the same log, now the new call's.
        OutputStream::write(&mut stderr, "ne\n".into()).unwrap();
        let lines = guest.state().lines;
        assert_eq!((lines, guest.dropped()), (1, 0));
        assert_eq!(
            guest.stderr(),
            "ne\n",
            "no earlier call's stderr in a trap report"
        );
    }
}
