//! What one call may put into telemetry, and what it has: the budget that
//! comb's span API (`span_api.rs`) and `wasi:otel` (`wasi_otel.rs`) share.
//!
//! What a guest puts into telemetry is bounded per call ([`TelemetryLimits`]):
//! long strings are cut, spans and bytes past the budget are dropped, and
//! the keys and names comb sets itself are refused. Both are counted, and
//! the counts go on the invocation span, so a guest can neither make the
//! host hold unbounded memory nor forge what comb reports about it.

use opentelemetry::{KeyValue, Value as OtelValue};

use crate::{
    limits::TelemetryLimits,
    spans::{self, attributes},
};

/// What one attribute or list element costs the budget on top of its
/// bytes, so many empty ones are not free.
pub(super) const ITEM_COST: usize = 8;

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
