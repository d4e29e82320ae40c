//! The host side of the WIT `tracing` interface: plugins' own spans.
//!
//! Each invocation gets a [`SpanApiCtx`] holding the invocation span and the
//! stack of spans the guest has open. A guest span starts as a child of the
//! top of that stack (else of the invocation span) and is pushed on it, like
//! `tracer.start_as_current_span(...)` in the OTel Python API; ending or
//! dropping it takes it off again.
//!
//! What a guest puts into telemetry is bounded per call, by the [`Budget`]
//! it shares with `wasi:otel`.

use std::sync::{Arc, Mutex};

use opentelemetry::{
    Array, Context, KeyValue, StringValue, Value as OtelValue,
    baggage::BaggageExt as _,
    global::BoxedTracer,
    trace::{SpanId, Status as OtelStatus, TraceContextExt, Tracer},
};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::{
    bindings::comb::plugin::tracing::{self as wit, SpanContext, Status, Value},
    budget::{Budget, ITEM_COST, comb_owns},
};
use crate::spans::attributes;

/// Attributes of the invocation span kept for comb's own: the guest may
/// set the SDK's per-span count less these there.
const RESERVED_FOR_COMB: usize = 32;

/// A span a guest holds a handle to.
pub struct GuestSpan {
    /// The context carrying the span, so children can be started under it.
    cx: Context,
    /// What the guest may do with it.
    role: Role,
    /// The call of its instance it was handed out in: a reused instance's
    /// handle from an earlier call belongs to another request's trace.
    call: u32,
}

/// How a guest came by a span handle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The guest started it, and so may end it.
    Owned,
    /// From `current-span`: an open guest span, borrowed (dropping the
    /// handle must not end it).
    Borrowed,
    /// From `current-span`: comb's invocation span, whose name and own keys
    /// are comb's.
    Invocation,
    /// Started past the per-call span budget: nothing is recorded.
    Unrecorded,
}

impl Budget {
    /// `value` with its strings cut, and what it costs in bytes.
    fn value(&self, value: Value) -> (OtelValue, usize) {
        match value {
            Value::String(s) => {
                let s = self.cut(s);
                let size = s.len();
                (s.into(), size)
            }
            Value::Bool(b) => (b.into(), 1),
            Value::S64(i) => (i.into(), 8),
            Value::F64(f) => (f.into(), 8),
            Value::StringList(list) => {
                let list: Vec<StringValue> = list
                    .into_iter()
                    .map(|s| StringValue::from(self.cut(s)))
                    .collect();
                // Each element costs its bytes and its slot.
                let size = list.iter().map(|s| s.as_str().len() + ITEM_COST).sum();
                (OtelValue::Array(Array::String(list)), size)
            }
            Value::BoolList(list) => {
                let size = list.len();
                (OtelValue::Array(Array::Bool(list)), size)
            }
            Value::S64List(list) => {
                let size = 8 * list.len();
                (OtelValue::Array(Array::I64(list)), size)
            }
            Value::F64List(list) => {
                let size = 8 * list.len();
                (OtelValue::Array(Array::F64(list)), size)
            }
        }
    }

    /// The attributes that fit the budget, as OTel ones; comb's own keys
    /// refused.
    fn attributes(&mut self, attributes: Vec<wit::KeyValue>, role: Role) -> Vec<KeyValue> {
        let mut kept = Vec::with_capacity(attributes.len().min(16));
        for wit::KeyValue { key, value } in attributes {
            if comb_owns(&key, role == Role::Invocation) {
                self.refused += 1;
                continue;
            }
            if role == Role::Invocation {
                let room = self
                    .limits
                    .span_attribute_count
                    .saturating_sub(RESERVED_FOR_COMB);
                if self.invocation_attributes >= room {
                    self.dropped += 1;
                    continue;
                }
            }
            let (value, size) = self.value(value);
            if let Some(kept_one) = self.keep(key, value, size) {
                if role == Role::Invocation {
                    self.invocation_attributes += 1;
                }
                kept.push(kept_one);
            }
        }
        kept
    }
}

/// The guest's current span, shared with what runs outside the span API's
/// host calls: the guest's stdout and stderr are written through WASI
/// streams that cannot reach the store, yet their lines belong on it.
#[derive(Clone)]
pub(crate) struct CurrentSpan(Arc<Mutex<Context>>);

impl CurrentSpan {
    /// The guest's current span now.
    pub(crate) fn get(&self) -> Context {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, cx: &Context) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = cx.clone();
    }
}

/// Per-invocation state of the span API.
pub(crate) struct SpanApiCtx {
    /// The tracer guest spans are started with: one per plugin, scoped to
    /// the plugin's name and version.
    tracer: Arc<BoxedTracer>,
    /// The invocation span comb opened around this call.
    invocation: Context,
    /// The spans the guest has started and not yet ended, innermost last.
    open: Vec<Context>,
    /// `plugin.name`, added to every guest span so one query groups plugins.
    plugin_name: KeyValue,
    /// The top of `open` (else `invocation`), for the guest's stdio.
    shared: CurrentSpan,
    /// Which call of its instance this is; handles from other calls are
    /// inert.
    call: u32,
}

impl SpanApiCtx {
    /// State for one invocation whose span is in `invocation`.
    pub(crate) fn new(
        tracer: Arc<BoxedTracer>,
        invocation: Context,
        plugin_name: StringValue,
        call: u32,
    ) -> Self {
        SpanApiCtx {
            call,
            tracer,
            shared: CurrentSpan(Arc::new(Mutex::new(invocation.clone()))),
            invocation,
            open: Vec::new(),
            plugin_name: KeyValue::new(attributes::PLUGIN_NAME, plugin_name),
        }
    }

    /// A handle that follows the guest's current span.
    pub(crate) fn current_span(&self) -> CurrentSpan {
        self.shared.clone()
    }

    /// The guest's current span: the innermost it has open, else the
    /// invocation span.
    pub(crate) fn current(&self) -> &Context {
        self.open.last().unwrap_or(&self.invocation)
    }

    /// Ends the spans the guest left open, innermost first.
    pub(crate) fn end_open(&mut self) {
        while let Some(cx) = self.open.pop() {
            cx.span().end();
        }
        self.shared.set(&self.invocation);
    }

    /// A handle this call made, unless nothing it does is recorded:
    /// started past the span budget, or handed out in an earlier call of a
    /// reused instance: that span is another request's, whose invocation
    /// span may not even have ended yet (the instance is idle again as soon
    /// as its call returns).
    fn recorded<'t>(
        &self,
        table: &'t ResourceTable,
        span: &Resource<GuestSpan>,
    ) -> wasmtime::Result<Option<&'t GuestSpan>> {
        let span = table.get(span)?;
        Ok((span.role != Role::Unrecorded && span.call == self.call).then_some(span))
    }

    fn close(&mut self, span_id: SpanId) {
        if let Some(index) = self
            .open
            .iter()
            .rposition(|cx| cx.span().span_context().span_id() == span_id)
        {
            self.open.remove(index);
            self.shared.set(self.current());
        }
    }

    fn open(&mut self, cx: Context) {
        self.shared.set(&cx);
        self.open.push(cx);
    }
}

/// What the span API's host functions work on: its own state plus the
/// store's resource table, where the guest's span handles live.
pub(crate) struct SpanApiView<'a> {
    /// This invocation's span state.
    pub ctx: &'a mut SpanApiCtx,
    /// What the call may still put into telemetry.
    pub budget: &'a mut Budget,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

struct SpanApi;

impl HasData for SpanApi {
    type Data<'a> = SpanApiView<'a>;
}

/// Adds the `comb:plugin/tracing` imports to `linker`.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SpanApiView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, SpanApi>(linker, view)
}

impl wit::Host for SpanApiView<'_> {
    fn current_span(&mut self) -> wasmtime::Result<Resource<GuestSpan>> {
        let role = if self.ctx.open.is_empty() {
            Role::Invocation
        } else {
            Role::Borrowed
        };
        let cx = self.ctx.current().clone();
        let call = self.ctx.call;
        Ok(self.table.push(GuestSpan { cx, role, call })?)
    }

    fn baggage(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .ctx
            .invocation
            .baggage()
            .iter()
            .map(|(name, (value, _metadata))| (name.to_string(), value.to_string()))
            .collect())
    }
}

impl wit::HostSpan for SpanApiView<'_> {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<GuestSpan>> {
        let budget = &mut *self.budget;
        let name = budget.span_name(name);
        if budget.spans >= budget.limits.spans_per_call || !budget.spend(name.len()) {
            if budget.spans >= budget.limits.spans_per_call {
                budget.dropped += 1;
            }
            let cx = self.ctx.current().clone();
            return Ok(self.table.push(GuestSpan {
                cx,
                role: Role::Unrecorded,
                call: self.ctx.call,
            })?);
        }
        budget.spans += 1;
        let parent = self.ctx.current();
        let span = self
            .ctx
            .tracer
            .span_builder(name)
            .with_attributes([self.ctx.plugin_name.clone()])
            .start_with_context(&*self.ctx.tracer, parent);
        let cx = parent.with_span(span);
        self.ctx.open(cx.clone());
        Ok(self.table.push(GuestSpan {
            cx,
            role: Role::Owned,
            call: self.ctx.call,
        })?)
    }

    fn set_attribute(
        &mut self,
        span: Resource<GuestSpan>,
        key: String,
        value: Value,
    ) -> wasmtime::Result<()> {
        self.set_attributes(span, vec![wit::KeyValue { key, value }])
    }

    fn set_attributes(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        let kept = self.budget.attributes(attributes, span.role);
        if !kept.is_empty() {
            span.cx.span().set_attributes(kept);
        }
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        let budget = &mut *self.budget;
        let name = budget.cut(name);
        if !budget.spend(name.len()) {
            return Ok(());
        }
        // An event's attributes are the guest's own, whatever the span.
        let attributes = budget.attributes(attributes, Role::Owned);
        span.cx.span().add_event(name, attributes);
        Ok(())
    }

    fn set_status(&mut self, span: Resource<GuestSpan>, status: Status) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        let budget = &mut *self.budget;
        let status = match status {
            Status::Unset => OtelStatus::Unset,
            Status::Ok => OtelStatus::Ok,
            Status::Error(description) => {
                let description = budget.cut(description);
                if !budget.spend(description.len()) {
                    return Ok(());
                }
                OtelStatus::error(description)
            }
        };
        span.cx.span().set_status(status);
        Ok(())
    }

    fn record_error(
        &mut self,
        span: Resource<GuestSpan>,
        error_type: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        let budget = &mut *self.budget;
        let (error_type, message) = (budget.cut(error_type), budget.cut(message));
        if !budget.spend(error_type.len() + message.len()) {
            return Ok(());
        }
        span.cx.span().add_event(
            "exception",
            vec![
                KeyValue::new(attributes::EXCEPTION_TYPE, error_type),
                KeyValue::new(attributes::EXCEPTION_MESSAGE, message),
            ],
        );
        Ok(())
    }

    fn update_name(&mut self, span: Resource<GuestSpan>, name: String) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        let budget = &mut *self.budget;
        match span.role {
            Role::Unrecorded => {}
            // `invoke {plugin}` is what per-plugin comparisons group by.
            Role::Invocation => budget.refused += 1,
            Role::Owned | Role::Borrowed => {
                let name = budget.span_name(name);
                if budget.spend(name.len()) {
                    span.cx.span().update_name(name);
                }
            }
        }
        Ok(())
    }

    fn context(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<SpanContext> {
        let span = self.table.get(&span)?;
        let span_ref = span.cx.span();
        let context = span_ref.span_context();
        Ok(SpanContext {
            trace_id: context.trace_id().to_string(),
            span_id: context.span_id().to_string(),
        })
    }

    fn end(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        let Some(span) = self.ctx.recorded(self.table, &span)? else {
            return Ok(());
        };
        if span.role == Role::Owned {
            // Ending twice is a no-op in the SDK, so no bookkeeping here.
            span.cx.span().end();
            let span_id = span.cx.span().span_context().span_id();
            self.ctx.close(span_id);
        }
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        let span = self.table.delete(span)?;
        // An earlier call's span ended with that call.
        if span.role == Role::Owned && span.call == self.ctx.call {
            span.cx.span().end();
            self.ctx.close(span.cx.span().span_context().span_id());
        }
        Ok(())
    }
}

/// WIT attributes as OTel ones.
pub(super) fn key_values(attributes: Vec<wit::KeyValue>) -> impl Iterator<Item = KeyValue> {
    attributes
        .into_iter()
        .map(|wit::KeyValue { key, value }| KeyValue::new(key, otel_value(value)))
}

fn otel_value(value: Value) -> OtelValue {
    match value {
        Value::String(s) => s.into(),
        Value::Bool(b) => b.into(),
        Value::S64(i) => i.into(),
        Value::F64(f) => f.into(),
        Value::StringList(list) => OtelValue::Array(Array::String(
            list.into_iter().map(StringValue::from).collect(),
        )),
        Value::BoolList(list) => OtelValue::Array(Array::Bool(list)),
        Value::S64List(list) => OtelValue::Array(Array::I64(list)),
        Value::F64List(list) => OtelValue::Array(Array::F64(list)),
    }
}
