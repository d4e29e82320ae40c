//! What one call may put into telemetry, and what it has: the budget that
//! comb's span API (`span_api.rs`) and `wasi:otel` (`wasi_otel.rs`) share.
//!
//! What a guest puts into telemetry is bounded per call ([`TelemetryLimits`]):
//! long strings are cut, spans and bytes past the budget are dropped, and
//! the keys and names comb sets itself are refused. Both are counted, and
//! the counts go on the invocation span, so a guest can neither make the
//! host hold unbounded memory nor forge what comb reports about it.

use opentelemetry::{Array, KeyValue, StringValue, Value as OtelValue};

use crate::{
    limits::TelemetryLimits,
    spans::{self, attributes},
};

/// What one attribute or list element costs the budget on top of its
/// bytes, so many empty ones are not free.
pub(super) const ITEM_COST: usize = 8;

/// What a byte-array value looks like in the spec's JSON encoding; kept as
/// that string (the OTel API's values have no bytes).
const BYTES_PREFIX: &str = "data:application/octet-stream;base64,";

/// What one call has put into telemetry so far, against its limits.
pub(crate) struct Budget {
    pub(super) limits: TelemetryLimits,
    pub(super) spans: usize,
    bytes: usize,
    /// The guest's attributes on comb's invocation span (comb's span API).
    pub(super) invocation_attributes: usize,
    pub(super) dropped: u64,
    pub(super) refused: u64,
}

impl Budget {
    /// Nothing spent yet under `limits`.
    pub(crate) fn new(limits: TelemetryLimits) -> Self {
        Budget {
            limits,
            spans: 0,
            bytes: 0,
            invocation_attributes: 0,
            dropped: 0,
            refused: 0,
        }
    }

    /// Takes one of the call's spans, or counts a drop when none is left.
    pub(super) fn take_span(&mut self) -> bool {
        if self.spans >= self.limits.spans_per_call {
            self.dropped += 1;
            return false;
        }
        self.spans += 1;
        true
    }

    /// Whether the call may still start a span.
    pub(super) fn spans_left(&self) -> bool {
        self.spans < self.limits.spans_per_call
    }

    /// Bytes still to spend.
    pub(super) fn bytes_left(&self) -> usize {
        self.limits.bytes_per_call.saturating_sub(self.bytes)
    }

    /// Whether `bytes` more fit; counts a drop when they do not.
    pub(super) fn spend(&mut self, bytes: usize) -> bool {
        if self.bytes.saturating_add(bytes) > self.limits.bytes_per_call {
            self.dropped += 1;
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// `text` cut to the value length limit, at a character boundary.
    pub(super) fn cut(&self, mut text: String) -> String {
        let limit = self.limits.attribute_value_length;
        if text.len() > limit {
            text.truncate(text.floor_char_boundary(limit));
            text.shrink_to_fit();
        }
        text
    }

    /// A guest span's name: cut, and never one of comb's invocation span
    /// names (a guest's fake `invoke ...` spans would join every query that
    /// compares plugins by them): such a name is prefixed and counted.
    pub(super) fn span_name(&mut self, name: String) -> String {
        let name = self.cut(name);
        if name.starts_with(spans::INVOCATION_SPAN_PREFIX) {
            self.refused += 1;
            return format!("guest: {name}");
        }
        name
    }

    /// One attribute whose value (`size` bytes) is already cut, if it fits
    /// the budget.
    pub(super) fn keep(&mut self, key: String, value: OtelValue, size: usize) -> Option<KeyValue> {
        self.spend(key.len() + size + ITEM_COST)
            .then(|| KeyValue::new(key, value))
    }
}

impl Budget {
    /// Span data dropped past the limits (spans, attributes, events), counted.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Attempts to set comb's own keys or names, or to write outside the
    /// call's trace.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }
}

/// Whether `key` is one comb sets itself: `plugin.*` and `faas.*` on every
/// span (comb adds `plugin.name` to every guest span); on the invocation
/// span also `error.type` and `http.*`, which comb records from the call's
/// outcome.
pub(super) fn comb_owns(key: &str, on_invocation: bool) -> bool {
    key.starts_with("plugin.")
        || key.starts_with("faas.")
        || (on_invocation && (key == attributes::ERROR_TYPE || key.starts_with("http.")))
}

/// The guest's attributes (`wasi:otel`'s: a key and its value in the
/// spec's JSON encoding) that fit the budget, comb's keys refused.
pub(super) fn json_attributes(
    attributes: impl IntoIterator<Item = (String, String)>,
    budget: &mut Budget,
) -> Vec<KeyValue> {
    let attributes = attributes.into_iter();
    let mut kept = Vec::with_capacity(attributes.size_hint().0.min(16));
    for (key, json) in attributes {
        if comb_owns(&key, false) {
            budget.refused += 1;
            continue;
        }
        // Parsed only when it could fit: a JSON array of numbers grows
        // eightfold in memory.
        if key.len() + json.len() > budget.bytes_left() {
            budget.dropped += 1;
            continue;
        }
        let (value, size) = json_value(json, budget);
        kept.extend(budget.keep(key, value, size));
    }
    kept
}

/// A value in the spec's JSON encoding as an OTel one, its strings cut:
/// strings, booleans, numbers and arrays of one of them as they are; maps,
/// mixed arrays and bytes (no OTel API value holds them) as their JSON
/// text; text that is not JSON as a string, leniently.
pub(super) fn json_value(json: String, budget: &Budget) -> (OtelValue, usize) {
    use serde_json::Value as Json;
    let string = |text: String| {
        let text = budget.cut(text);
        let size = text.len();
        (OtelValue::String(text.into()), size)
    };
    let parsed = match serde_json::from_str::<Json>(&json) {
        Ok(parsed) => parsed,
        Err(_) => return string(json),
    };
    match parsed {
        Json::Bool(b) => (b.into(), 1),
        Json::Number(n) => match n.as_i64() {
            Some(i) => (i.into(), 8),
            None => (n.as_f64().unwrap_or(f64::NAN).into(), 8),
        },
        Json::String(text) if !text.starts_with(BYTES_PREFIX) => string(text),
        Json::Array(items) => match array(&items, budget) {
            Some(array) => array,
            None => string(json),
        },
        _ => string(json),
    }
}

/// An array of one kind as an OTel array; `None` for a mixed one.
fn array(items: &[serde_json::Value], budget: &Budget) -> Option<(OtelValue, usize)> {
    use serde_json::Value as Json;
    let size = 8 * items.len();
    if items.iter().all(Json::is_boolean) {
        let list = items.iter().filter_map(Json::as_bool).collect();
        return Some((OtelValue::Array(Array::Bool(list)), size));
    }
    if items.iter().all(Json::is_i64) {
        let list = items.iter().filter_map(Json::as_i64).collect();
        return Some((OtelValue::Array(Array::I64(list)), size));
    }
    if items.iter().all(Json::is_number) {
        let list = items.iter().filter_map(Json::as_f64).collect();
        return Some((OtelValue::Array(Array::F64(list)), size));
    }
    if items.iter().all(Json::is_string) {
        let list: Vec<StringValue> = items
            .iter()
            .filter_map(Json::as_str)
            .map(|s| budget.cut(s.to_owned()).into())
            .collect();
        let size = list.iter().map(|s| s.as_str().len() + 8).sum();
        return Some((OtelValue::Array(Array::String(list)), size));
    }
    None
}

#[cfg(test)]
impl Budget {
    /// A default budget whose strings are cut at `length` bytes.
    pub(super) fn cutting_at(length: usize) -> Self {
        Budget::new(TelemetryLimits {
            attribute_value_length: length,
            ..TelemetryLimits::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Array;

    use super::*;

    fn budget() -> Budget {
        Budget::cutting_at(8)
    }

    #[test]
    fn json_values_become_otel_values_with_strings_cut() {
        let budget = budget();
        let value = |json: &str| json_value(json.to_owned(), &budget).0;
        assert_eq!(value("\"text\""), OtelValue::from("text"));
        assert_eq!(value("\"a long text\""), OtelValue::from("a long t"));
        assert_eq!(value("true"), OtelValue::from(true));
        assert_eq!(value("-42"), OtelValue::from(-42_i64));
        assert_eq!(value("2.5"), OtelValue::from(2.5));
        assert_eq!(value("[1,2]"), OtelValue::Array(Array::I64(vec![1, 2])));
        assert_eq!(
            value("[1,2.5]"),
            OtelValue::Array(Array::F64(vec![1.0, 2.5]))
        );
        assert_eq!(
            value("[\"a\",\"b\"]"),
            OtelValue::Array(Array::String(vec!["a".into(), "b".into()]))
        );
        // What the OTel API cannot hold stays its JSON text (cut).
        assert_eq!(value("[1,\"a\"]"), OtelValue::from("[1,\"a\"]"));
        assert_eq!(value("{\"k\":1}"), OtelValue::from("{\"k\":1}"));
        assert_eq!(value("not json"), OtelValue::from("not json"));
    }
}
