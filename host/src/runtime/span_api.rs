//! The host side of the WIT `tracing` interface: plugins' own spans.
//!
//! Each invocation gets a [`SpanApiCtx`] holding the invocation span and the
//! stack of spans the guest has open. A guest span starts as a child of the
//! top of that stack (else of the invocation span) and is pushed on it, like
//! `tracer.start_as_current_span(...)` in the OTel Python API; ending or
//! dropping it takes it off again.

use std::sync::{Arc, Mutex};

use opentelemetry::{
    Array, Context, KeyValue, StringValue, Value as OtelValue,
    baggage::BaggageExt as _,
    global::BoxedTracer,
    trace::{SpanId, Status as OtelStatus, TraceContextExt, Tracer},
};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::comb::plugin::tracing::{self as wit, SpanContext, Status, Value};
use crate::spans::attributes;

/// A span a guest holds a handle to.
pub struct GuestSpan {
    /// The context carrying the span, so children can be started under it.
    cx: Context,
    /// Whether the guest started (and so may end) this span. Handles from
    /// `current-span` only borrow it: dropping them must not end it.
    owned: bool,
}

/// The guest's current span, shared with what runs outside the span API's
/// host calls: the guest's stdout and stderr are written through WASI
/// streams that cannot reach the store, yet their lines belong on it.
#[derive(Clone)]
pub struct CurrentSpan(Arc<Mutex<Context>>);

impl CurrentSpan {
    /// The guest's current span now.
    pub fn get(&self) -> Context {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, cx: &Context) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = cx.clone();
    }
}

/// Per-invocation state of the span API.
pub struct SpanApiCtx {
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
}

impl SpanApiCtx {
    /// State for one invocation whose span is in `invocation`.
    pub fn new(tracer: Arc<BoxedTracer>, invocation: Context, plugin_name: StringValue) -> Self {
        SpanApiCtx {
            tracer,
            shared: CurrentSpan(Arc::new(Mutex::new(invocation.clone()))),
            invocation,
            open: Vec::new(),
            plugin_name: KeyValue::new(attributes::PLUGIN_NAME, plugin_name),
        }
    }

    /// A handle that follows the guest's current span.
    pub fn current_span(&self) -> CurrentSpan {
        self.shared.clone()
    }

    /// The guest's current span: the innermost it has open, else the
    /// invocation span.
    pub fn current(&self) -> &Context {
        self.open.last().unwrap_or(&self.invocation)
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
pub struct SpanApiView<'a> {
    /// This invocation's span state.
    pub ctx: &'a mut SpanApiCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

struct SpanApi;

impl HasData for SpanApi {
    type Data<'a> = SpanApiView<'a>;
}

/// Adds the `comb:plugin/tracing` imports to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SpanApiView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, SpanApi>(linker, view)
}

impl wit::Host for SpanApiView<'_> {
    fn current_span(&mut self) -> wasmtime::Result<Resource<GuestSpan>> {
        let cx = self.ctx.current().clone();
        Ok(self.table.push(GuestSpan { cx, owned: false })?)
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
        let parent = self.ctx.current();
        let span = self
            .ctx
            .tracer
            .span_builder(name)
            .with_attributes([self.ctx.plugin_name.clone()])
            .start_with_context(&*self.ctx.tracer, parent);
        let cx = parent.with_span(span);
        self.ctx.open(cx.clone());
        Ok(self.table.push(GuestSpan { cx, owned: true })?)
    }

    fn set_attribute(
        &mut self,
        span: Resource<GuestSpan>,
        key: String,
        value: Value,
    ) -> wasmtime::Result<()> {
        let span = self.table.get(&span)?;
        span.cx
            .span()
            .set_attribute(KeyValue::new(key, otel_value(value)));
        Ok(())
    }

    fn set_attributes(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let span = self.table.get(&span)?;
        span.cx.span().set_attributes(key_values(attributes));
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let span = self.table.get(&span)?;
        span.cx
            .span()
            .add_event(name, key_values(attributes).collect());
        Ok(())
    }

    fn set_status(&mut self, span: Resource<GuestSpan>, status: Status) -> wasmtime::Result<()> {
        let span = self.table.get(&span)?;
        span.cx.span().set_status(match status {
            Status::Unset => OtelStatus::Unset,
            Status::Ok => OtelStatus::Ok,
            Status::Error(description) => OtelStatus::error(description),
        });
        Ok(())
    }

    fn record_error(
        &mut self,
        span: Resource<GuestSpan>,
        error_type: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let span = self.table.get(&span)?;
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
        let span = self.table.get(&span)?;
        span.cx.span().update_name(name);
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
        let span = self.table.get(&span)?;
        if span.owned {
            // Ending twice is a no-op in the SDK, so no bookkeeping here.
            span.cx.span().end();
            let span_id = span.cx.span().span_context().span_id();
            self.ctx.close(span_id);
        }
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        let span = self.table.delete(span)?;
        if span.owned {
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
