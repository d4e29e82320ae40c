//! Spans in the request's trace, through comb's host span API.
//!
//! [`Span::start`] is `tracer.start_as_current_span(name)`: the new span is a
//! child of the current one and becomes current until it is dropped.
//! [`Span::current`] is `trace.get_current_span()`: a [`SpanRef`], which
//! sets attributes but cannot end a span it did not start.

use std::ops::Deref;

use crate::bindings::comb::plugin::tracing as wit;

pub use wit::{KeyValue, SpanContext, Status, Value};

/// A span this plugin started: dropping it (or [`Span::end`]) ends it.
/// Everything else it does, it does through [`SpanRef`].
///
/// ```no_run
/// use comb_sdk::trace::Span;
///
/// let span = Span::start("home-activites-mock-data");
/// span.set("app.result_length", 3);
/// span.event("cache-miss", [("app.key", "home".into())]);
/// // Ends here, as a Python `with` block would.
/// ```
pub struct Span(SpanRef);

/// A span in the request's trace, this plugin's or comb's invocation span:
/// attributes, events, status and name, but no `end` (a plugin cannot end
/// the invocation span; its own spans end when their [`Span`] drops).
pub struct SpanRef(wit::Span);

impl Span {
    /// Starts a span as a child of the current span and makes it current.
    pub fn start(name: &str) -> Span {
        Span(SpanRef(wit::Span::new(name)))
    }

    /// The current span: the innermost span this plugin has open, else
    /// comb's invocation span (`trace.get_current_span()`).
    pub fn current() -> SpanRef {
        SpanRef(wit::current_span())
    }

    /// Ends the span now rather than when it is dropped.
    pub fn end(self) {
        self.0.0.end();
    }
}

impl Deref for Span {
    type Target = SpanRef;

    fn deref(&self) -> &SpanRef {
        &self.0
    }
}

impl SpanRef {
    /// Sets an attribute: `span.set("app.result_length", results.len())`.
    pub fn set(&self, key: &str, value: impl Into<Value>) {
        self.0.set_attribute(key, &value.into());
    }

    /// Adds an event with attributes: `span.event("retry", [("app.attempt", 2.into())])`,
    /// or `[]` for none.
    pub fn event<'a>(&self, name: &str, attributes: impl IntoIterator<Item = (&'a str, Value)>) {
        self.0.add_event(name, &key_values(attributes));
    }

    /// Sets the span's status.
    pub fn set_status(&self, status: Status) {
        self.0.set_status(&status);
    }

    /// Records an `exception` event; the status is left to [`SpanRef::set_status`].
    pub fn record_error(&self, error_type: &str, message: &str) {
        self.0.record_error(error_type, message);
    }

    /// Renames the span. comb keeps the name of its own invocation span.
    pub fn update_name(&self, name: &str) {
        self.0.update_name(name);
    }

    /// This span's trace id and span id.
    pub fn context(&self) -> SpanContext {
        self.0.context()
    }
}

/// The W3C baggage the request came with, as name-value pairs; it
/// travels on with the plugin's outgoing calls.
pub fn baggage() -> Vec<(String, String)> {
    wit::baggage()
}

/// `(key, value)` pairs as WIT key-values.
pub(crate) fn key_values<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Vec<KeyValue> {
    pairs
        .into_iter()
        .map(|(key, value)| KeyValue {
            key: key.to_owned(),
            value,
        })
        .collect()
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::String(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::String(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::S64(value)
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Value::S64(value.into())
    }
}

impl From<usize> for Value {
    fn from(value: usize) -> Self {
        // A length never exceeds i64::MAX on a 32-bit guest.
        Value::S64(value as i64)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::F64(value)
    }
}

impl From<Vec<String>> for Value {
    fn from(value: Vec<String>) -> Self {
        Value::StringList(value)
    }
}

impl From<Vec<i64>> for Value {
    fn from(value: Vec<i64>) -> Self {
        Value::S64List(value)
    }
}
