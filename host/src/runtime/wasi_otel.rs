//! The host side of `wasi:otel` (`wasi:otel@0.2.0-rc.2`, `wit/deps/otel`):
//! the standard guest telemetry interface, through which a component
//! instrumented with an OpenTelemetry SDK (its span processor and log
//! processor over the WIT) hands its telemetry to the host, as in Spin's
//! `factor-otel`.
//!
//! - `tracing`: the guest's SDK asks for the span its spans descend from
//!   (`outer-span-context`, or `current-span-context` as the spec's main
//!   branch renamed it) and gets comb's invocation span, its real flags
//!   included: a guest whose sampler follows its parent records only what
//!   comb samples. It reports each span's start (`on-start`) and hands over
//!   the finished span (`on-end`), which comb exports as it is — its ids,
//!   times, kind, events, links, status and scope — with comb's resource
//!   and `plugin.name`, through [`GuestSpans`] into the same pipeline as
//!   comb's own spans (the page and the export queue).
//! - `metrics`: what the guest's SDK measured, re-recorded with comb's
//!   meter under the plugin's identity (`guest_metrics.rs` says how).
//! - `logs`: each record is a line of the plugin's log ([`GuestLog`]): a
//!   line in comb's log with the record's trace and span ids, and a `log`
//!   event on its span (a guest span still open gets it when it ends).
//!
//! Every byte goes through the call's telemetry budget shared with comb's
//! span API ([`Budget`]): values cut, spans, attributes, events, links and
//! bytes per call bounded, comb's keys (`plugin.*`, `faas.*`) and
//! `invoke …` names refused. A span in another trace than the call's, one
//! never started, started or ended twice, or parented outside the call is
//! refused. Refusals and drops are counted on the invocation span as for
//! comb's API; nothing here traps the guest. Nothing outlives the call: a
//! reused instance's next call starts with nothing started.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    InstrumentationScope, KeyValue, Value as OtelValue,
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use wasmtime::component::{HasData, Linker};

use super::{
    bindings::{
        comb::plugin::log::Level,
        otel::{
            logs::{self, LogRecord},
            metrics,
            tracing::{self as wit, Datetime},
            types,
        },
    },
    budget::{self, Budget, ITEM_COST},
    guest_log::GuestLog,
    guest_metrics::{self, Cumulative, GuestMeter},
};

/// Links one span keeps (the SDK's default, `OTEL_SPAN_LINK_COUNT_LIMIT`).
const LINKS_PER_SPAN: usize = 128;

/// Where guests' finished spans go: comb's span pipeline (the page and the
/// export queue), as the tracer's own spans do. Called on the guest's
/// thread, so it must not wait. Cheap to clone.
#[derive(Clone)]
pub struct GuestSpans(Arc<dyn Fn(SpanData) + Send + Sync>);

impl GuestSpans {
    /// Spans go to `export`.
    pub fn new(export: impl Fn(SpanData) + Send + Sync + 'static) -> Self {
        GuestSpans(Arc::new(export))
    }
}

/// One call's `wasi:otel` state: the spans the guest started, in the
/// order started (the last open one is its current span), and where
/// finished ones go.
pub(crate) struct StandardSpans {
    /// comb's invocation span: the guest's spans descend from it.
    invocation: SpanContext,
    /// `plugin.name`, added to every guest span as comb's API does.
    plugin_name: KeyValue,
    /// Where finished spans go; `None` when the SDK is off.
    exports: Option<GuestSpans>,
    /// Started in this call. At most the call's span budget: a start past
    /// it is dropped, not kept.
    started: HashMap<SpanId, Started>,
    /// Started and not ended, innermost last.
    open: Vec<SpanContext>,
}

struct Started {
    ended: bool,
    /// `log` events for it, from records logged while it was open.
    events: Vec<Event>,
}

impl StandardSpans {
    /// Nothing started yet in a call under `invocation`.
    pub(crate) fn new(
        invocation: SpanContext,
        plugin_name: KeyValue,
        exports: Option<GuestSpans>,
    ) -> Self {
        StandardSpans {
            invocation,
            plugin_name,
            exports,
            started: HashMap::new(),
            open: Vec::new(),
        }
    }

    /// The guest's innermost open span, when it has one: an outgoing HTTP
    /// call's span goes under it, as Spin does.
    pub(crate) fn current(&self) -> Option<&SpanContext> {
        self.open.last()
    }

    /// Spans started and never ended: their data never came.
    pub(crate) fn unfinished(&self) -> u64 {
        self.open.len() as u64
    }

    /// The guest's span context if it is in this call's trace and has a
    /// span id; counted as refused otherwise (a guest must not write into
    /// another request's trace).
    fn own_span(&self, context: &wit::SpanContext, budget: &mut Budget) -> Option<SpanContext> {
        let trace_id = parse_trace_id(&context.trace_id);
        let span_id = parse_span_id(&context.span_id);
        let invocation = &self.invocation;
        match (trace_id, span_id) {
            (Some(trace_id), Some(span_id))
                if trace_id == invocation.trace_id() && span_id != SpanId::INVALID =>
            {
                Some(SpanContext::new(
                    trace_id,
                    span_id,
                    invocation.trace_flags(),
                    false,
                    TraceState::NONE,
                ))
            }
            _ => {
                budget.refused += 1;
                None
            }
        }
    }

    /// The SDK's span data for a finished guest span, within the call's
    /// budget; `None` when it does not fit, or nothing is recorded.
    fn span_data(
        &mut self,
        span: wit::SpanData,
        context: SpanContext,
        log_events: Vec<Event>,
        budget: &mut Budget,
    ) -> Option<SpanData> {
        let invocation = self.invocation.clone();
        if !invocation.is_sampled() {
            return None;
        }
        let name = budget.span_name(span.name);
        if !budget.spend(name.len()) {
            return None;
        }
        // Its parent: a span of this call, else the invocation span (a
        // guest that never asked for the outer context made a root span;
        // one naming a span outside the call is refused that parent).
        let parent = parse_span_id(&span.parent_span_id).unwrap_or(SpanId::INVALID);
        let parent = if parent == invocation.span_id() || self.started.contains_key(&parent) {
            parent
        } else {
            if parent != SpanId::INVALID {
                budget.refused += 1;
            }
            invocation.span_id()
        };
        let mut attributes = vec![self.plugin_name.clone()];
        attributes.extend(key_values(span.attributes, budget));
        let room = budget.limits.span_attribute_count;
        let over = attributes.len().saturating_sub(room);
        attributes.truncate(room);
        // The guest's own counts are its word: added without overflowing.
        let dropped_attributes = u32::try_from(over)
            .unwrap_or(u32::MAX)
            .saturating_add(span.dropped_attributes);

        let mut events = SpanEvents::default();
        let room = budget.limits.span_event_count;
        for event in span.events {
            if events.events.len() >= room {
                events.dropped_count = events.dropped_count.saturating_add(1);
                continue;
            }
            let name = budget.cut(event.name);
            // An event costs its slot too: empty ones are not free.
            if budget.spend(name.len() + ITEM_COST) {
                let attributes = key_values(event.attributes, budget);
                let time = system_time(event.time);
                events.events.push(Event::new(name, time, attributes, 0));
            }
        }
        // Records logged on it while it was open, bounded as log lines.
        for event in log_events {
            if events.events.len() >= room {
                events.dropped_count = events.dropped_count.saturating_add(1);
            } else {
                events.events.push(event);
            }
        }
        events.dropped_count = events.dropped_count.saturating_add(span.dropped_events);

        let mut links = SpanLinks::default();
        for link in span.links {
            let context = match (
                parse_trace_id(&link.span_context.trace_id),
                parse_span_id(&link.span_context.span_id),
            ) {
                (Some(trace_id), Some(span_id)) if links.links.len() < LINKS_PER_SPAN => {
                    SpanContext::new(
                        trace_id,
                        span_id,
                        trace_flags(link.span_context.trace_flags),
                        link.span_context.is_remote,
                        trace_state(link.span_context.trace_state, budget),
                    )
                }
                _ => {
                    links.dropped_count = links.dropped_count.saturating_add(1);
                    continue;
                }
            };
            if budget.spend(32 + ITEM_COST) {
                let attributes = key_values(link.attributes, budget);
                links.links.push(Link::new(context, attributes, 0));
            }
        }
        links.dropped_count = links.dropped_count.saturating_add(span.dropped_links);

        let status = match span.status {
            wit::Status::Unset => Status::Unset,
            wit::Status::Ok => Status::Ok,
            wit::Status::Error(description) => {
                let description = budget.cut(description);
                if budget.spend(description.len()) {
                    Status::error(description)
                } else {
                    Status::error("")
                }
            }
        };
        let start_time = system_time(span.start_time);
        let end_time = system_time(span.end_time).max(start_time);
        Some(SpanData {
            span_context: SpanContext::new(
                context.trace_id(),
                context.span_id(),
                invocation.trace_flags(),
                false,
                trace_state(span.span_context.trace_state, budget),
            ),
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: match span.span_kind {
                wit::SpanKind::Client => SpanKind::Client,
                wit::SpanKind::Server => SpanKind::Server,
                wit::SpanKind::Producer => SpanKind::Producer,
                wit::SpanKind::Consumer => SpanKind::Consumer,
                wit::SpanKind::Internal => SpanKind::Internal,
            },
            name: name.into(),
            start_time,
            end_time,
            attributes,
            dropped_attributes_count: dropped_attributes,
            events,
            links,
            status,
            instrumentation_scope: scope(span.instrumentation_scope, budget),
        })
    }
}

/// What the `wasi:otel` host functions work on: the call's `wasi:otel`
/// spans, its telemetry budget and its log.
pub(crate) struct OtelView<'a> {
    /// This call's `wasi:otel` spans.
    pub standard: &'a mut StandardSpans,
    /// What the call may still put into telemetry, shared with comb's
    /// span API.
    pub budget: &'a mut Budget,
    /// This call's log.
    pub log: &'a GuestLog,
    /// The plugin's instruments in comb's meter (none at load).
    pub meter: Option<&'a GuestMeter>,
    /// Metric points this call has exported so far.
    pub metric_points: &'a mut usize,
    /// The instance's last cumulative values.
    pub cumulative: &'a mut Cumulative,
}

struct Otel;

impl HasData for Otel {
    type Data<'a> = OtelView<'a>;
}

/// Adds `wasi:otel/tracing`, `metrics` and `logs` to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> OtelView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, Otel>(linker, view)?;
    metrics::add_to_linker::<T, Otel>(linker, view)?;
    logs::add_to_linker::<T, Otel>(linker, view)
}

impl types::Host for OtelView<'_> {}

impl wit::Host for OtelView<'_> {
    fn on_start(&mut self, context: wit::SpanContext) -> wasmtime::Result<()> {
        let (standard, budget) = (&mut *self.standard, &mut *self.budget);
        let Some(context) = standard.own_span(&context, budget) else {
            return Ok(());
        };
        match standard.started.entry(context.span_id()) {
            Entry::Occupied(_) => budget.refused += 1,
            Entry::Vacant(slot) => {
                if budget.take_span() {
                    slot.insert(Started {
                        ended: false,
                        events: Vec::new(),
                    });
                    standard.open.push(context);
                }
            }
        }
        Ok(())
    }

    fn on_end(&mut self, span: wit::SpanData) -> wasmtime::Result<()> {
        let (standard, budget) = (&mut *self.standard, &mut *self.budget);
        let Some(context) = standard.own_span(&span.span_context, budget) else {
            return Ok(());
        };
        let span_id = context.span_id();
        let events = match standard.started.get_mut(&span_id) {
            Some(started) if !started.ended => {
                started.ended = true;
                std::mem::take(&mut started.events)
            }
            // Ended twice, or never started (or started past the budget,
            // already counted then).
            _ => {
                if budget.spans_left() {
                    budget.refused += 1;
                }
                return Ok(());
            }
        };
        if let Some(index) = standard.open.iter().rposition(|c| c.span_id() == span_id) {
            standard.open.remove(index);
        }
        if let Some(data) = standard.span_data(span, context, events, budget)
            && let Some(export) = &standard.exports
        {
            (export.0)(data);
        }
        Ok(())
    }

    fn outer_span_context(&mut self) -> wasmtime::Result<wit::SpanContext> {
        Ok(wit_context(&self.standard.invocation))
    }

    fn current_span_context(&mut self) -> wasmtime::Result<wit::SpanContext> {
        Ok(wit_context(&self.standard.invocation))
    }
}

impl metrics::Host for OtelView<'_> {
    fn export(
        &mut self,
        export: metrics::ResourceMetrics,
    ) -> wasmtime::Result<Result<(), metrics::Error>> {
        if let Some(meter) = self.meter {
            guest_metrics::record(
                meter,
                export,
                self.budget,
                self.metric_points,
                self.cumulative,
            );
        }
        // What was dropped is counted on the invocation span; the guest's
        // SDK has nothing better to do with an error than log it.
        Ok(Ok(()))
    }
}

impl logs::Host for OtelView<'_> {
    fn on_emit(&mut self, record: LogRecord) -> wasmtime::Result<()> {
        let (standard, budget) = (&mut *self.standard, &mut *self.budget);
        let level = level(record.severity_number, record.severity_text.as_deref());
        let message = match record.body {
            Some(body) if body.len() <= budget.bytes_left() => {
                match budget::json_value(body, budget) {
                    (OtelValue::String(text), _) => text.to_string(),
                    (other, _) => other.to_string(),
                }
            }
            Some(_) => {
                budget.dropped += 1;
                return Ok(());
            }
            None => String::new(),
        };
        let mut fields = Vec::new();
        if let Some(name) = record.event_name {
            let name = budget.cut(name);
            fields.extend(budget.keep("event.name".into(), name.clone().into(), name.len()));
        }
        fields.extend(key_values(record.attributes.unwrap_or_default(), budget));
        // The record's own span, when it names one of this call's open
        // spans; else the guest's current span as comb sees it.
        let span_id = record.span_id.as_deref().and_then(parse_span_id);
        let open = span_id.and_then(|id| standard.open.iter().find(|c| c.span_id() == id));
        match open {
            Some(context) => {
                let context = context.clone();
                if let Some(event) = self.log.line_for(level, &message, fields, &context) {
                    let time = record.timestamp.map_or_else(SystemTime::now, system_time);
                    if let Some(started) = standard.started.get_mut(&context.span_id()) {
                        started.events.push(Event::new("log", time, event, 0));
                    }
                }
            }
            None => self.log.log(level, &message, fields),
        }
        Ok(())
    }
}

/// The spec's context for `context` (ids as zero-padded hex).
fn wit_context(context: &SpanContext) -> wit::SpanContext {
    wit::SpanContext {
        trace_id: context.trace_id().to_string(),
        span_id: context.span_id().to_string(),
        trace_flags: if context.is_sampled() {
            wit::TraceFlags::SAMPLED
        } else {
            wit::TraceFlags::empty()
        },
        is_remote: context.is_remote(),
        trace_state: context
            .trace_state()
            .header()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    }
}

/// A trace id in hex, read leniently: a published guest library writes
/// ids without zero padding.
fn parse_trace_id(hex: &str) -> Option<TraceId> {
    (hex.len() <= 32)
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
        .map(TraceId::from)
}

/// A span id in hex, read as leniently as [`parse_trace_id`].
fn parse_span_id(hex: &str) -> Option<SpanId> {
    (hex.len() <= 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
        .map(SpanId::from)
}

fn trace_flags(flags: wit::TraceFlags) -> TraceFlags {
    if flags.contains(wit::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

/// A guest's trace state, within the budget; empty if any entry is invalid
/// (as the spec says).
fn trace_state(entries: Vec<(String, String)>, budget: &mut Budget) -> TraceState {
    let size = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    if entries.is_empty() || !budget.spend(size) {
        return TraceState::NONE;
    }
    TraceState::from_key_value(entries).unwrap_or(TraceState::NONE)
}

/// A `wasi:clocks` datetime as a system time (nanoseconds past a second
/// carry over).
fn system_time(time: Datetime) -> SystemTime {
    let since_epoch = Duration::from_secs(time.seconds)
        .saturating_add(Duration::from_nanos(u64::from(time.nanoseconds)));
    UNIX_EPOCH.checked_add(since_epoch).unwrap_or(UNIX_EPOCH)
}

/// The guest's instrumentation scope, its strings cut and paid for.
fn scope(scope: types::InstrumentationScope, budget: &mut Budget) -> InstrumentationScope {
    let name = budget.cut(scope.name);
    let version = scope.version.map(|v| budget.cut(v));
    let schema_url = scope.schema_url.map(|v| budget.cut(v));
    let size = name.len()
        + version.as_ref().map_or(0, String::len)
        + schema_url.as_ref().map_or(0, String::len);
    let mut builder = InstrumentationScope::builder(if budget.spend(size) {
        name
    } else {
        String::new()
    });
    if let Some(version) = version {
        builder = builder.with_version(version);
    }
    if let Some(schema_url) = schema_url {
        builder = builder.with_schema_url(schema_url);
    }
    builder
        .with_attributes(key_values(scope.attributes, budget))
        .build()
}

/// The guest's attributes that fit the budget, comb's keys refused.
fn key_values(attributes: Vec<types::KeyValue>, budget: &mut Budget) -> Vec<KeyValue> {
    budget::json_attributes(attributes.into_iter().map(|kv| (kv.key, kv.value)), budget)
}

/// A record's severity as a log level: OTel's severity numbers (1–4
/// trace, 5–8 debug, 9–12 info, 13–16 warn, 17–24 error and fatal), else
/// its text, else info.
fn level(number: Option<u8>, text: Option<&str>) -> Level {
    match (number, text.map(str::to_ascii_uppercase).as_deref()) {
        (Some(1..=4), _) => Level::Trace,
        (Some(5..=8), _) => Level::Debug,
        (Some(9..=12), _) => Level::Info,
        (Some(13..=16), _) => Level::Warn,
        (Some(17..), _) => Level::Error,
        (_, Some("TRACE")) => Level::Trace,
        (_, Some("DEBUG")) => Level::Debug,
        (_, Some("WARN" | "WARNING")) => Level::Warn,
        (_, Some("ERROR" | "FATAL" | "CRITICAL")) => Level::Error,
        _ => Level::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::TelemetryLimits;

    fn budget() -> Budget {
        Budget::cutting_at(8)
    }

    #[test]
    fn ids_are_read_with_or_without_zero_padding_and_never_longer() {
        assert_eq!(parse_trace_id("abc"), Some(TraceId::from(0xabc_u128)));
        assert_eq!(
            parse_trace_id(&format!("{:032x}", 0xabc)),
            Some(TraceId::from(0xabc_u128))
        );
        assert_eq!(parse_span_id("def"), Some(SpanId::from(0xdef_u64)));
        assert_eq!(parse_trace_id(&"f".repeat(33)), None);
        assert_eq!(parse_span_id(&"f".repeat(17)), None);
        assert_eq!(parse_span_id("not hex"), None);
        assert_eq!(parse_span_id(""), None);
    }

    #[test]
    fn comb_s_keys_and_values_past_the_budget_are_not_kept() {
        let mut budget = budget();
        let attribute = |key: &str, value: &str| types::KeyValue {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        let kept = key_values(
            vec![
                attribute("plugin.name", "\"x\""),
                attribute("faas.coldstart", "true"),
                attribute("app.kept", "1"),
                attribute("app.huge", &format!("[{}1]", "1,".repeat(200_000))),
            ],
            &mut budget,
        );
        assert_eq!(kept, [KeyValue::new("app.kept", 1_i64)]);
        assert_eq!((budget.refused, budget.dropped), (2, 1));
    }

    #[test]
    fn a_guest_s_counts_cannot_overflow_and_empty_events_are_not_free() {
        let trace_id = TraceId::from(7_u128);
        let invocation = SpanContext::new(
            trace_id,
            SpanId::from(1_u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        let mut standard = StandardSpans::new(invocation, KeyValue::new("plugin.name", "p"), None);
        let mut budget = Budget::new(TelemetryLimits::default());
        let now = Datetime {
            seconds: 1,
            nanoseconds: 0,
        };
        let context = wit::SpanContext {
            trace_id: "7".into(),
            span_id: "2".into(),
            trace_flags: wit::TraceFlags::SAMPLED,
            is_remote: false,
            trace_state: Vec::new(),
        };
        let own = standard.own_span(&context, &mut budget).unwrap();
        let span = wit::SpanData {
            span_context: context,
            parent_span_id: "1".into(),
            span_kind: wit::SpanKind::Internal,
            name: "s".into(),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            events: (0..600)
                .map(|_| wit::Event {
                    name: String::new(),
                    time: now,
                    attributes: Vec::new(),
                })
                .collect(),
            links: Vec::new(),
            status: wit::Status::Unset,
            instrumentation_scope: types::InstrumentationScope {
                name: String::new(),
                version: None,
                schema_url: None,
                attributes: Vec::new(),
            },
            dropped_attributes: u32::MAX,
            dropped_events: u32::MAX,
            dropped_links: u32::MAX,
        };
        let data = standard
            .span_data(span, own, Vec::new(), &mut budget)
            .unwrap();
        assert_eq!(data.dropped_attributes_count, u32::MAX);
        assert_eq!(data.events.dropped_count, u32::MAX);
        assert_eq!(data.links.dropped_count, u32::MAX);
        // 512 events kept, each charged its slot.
        assert_eq!(data.events.len(), 512);
        assert_eq!(
            budget.bytes_left(),
            TelemetryLimits::default().bytes_per_call - 1 - 512 * ITEM_COST
        );
    }

    #[test]
    fn severities_map_by_number_then_text() {
        assert!(matches!(level(Some(13), Some("INFO")), Level::Warn));
        assert!(matches!(level(Some(21), None), Level::Error));
        assert!(matches!(level(None, Some("debug")), Level::Debug));
        assert!(matches!(level(None, None), Level::Info));
    }
}
