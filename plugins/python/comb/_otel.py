"""OpenTelemetry's Python API backed by comb's span interface.

``opentelemetry-api`` is the real package; only its provider is comb's:
each span is a ``comb:plugin/tracing`` span, so it lands in the request's
trace under the invocation span, exactly as a Rust plugin's does. comb
parents a new span on the innermost span the plugin has open (what
``start_as_current_span`` nesting gives); a ``context`` naming another
parent is not followed.
"""

import contextlib
from typing import Iterator, Mapping, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.util import types
from wit_world.imports import tracing as wit


def install() -> None:
    """Makes comb the global tracer provider."""
    trace.set_tracer_provider(CombTracerProvider())


def value(v: types.AnyValue) -> Optional[wit.Value]:
    """An attribute value in comb's form; ``None`` for what it cannot hold."""
    # bool before int: True is an int in Python.
    if isinstance(v, bool):
        return wit.Value_Bool(v)
    if isinstance(v, int):
        return wit.Value_S64(v)
    if isinstance(v, float):
        return wit.Value_F64(v)
    if isinstance(v, str):
        return wit.Value_String(v)
    if isinstance(v, Sequence):
        items = list(v)
        for kind, variant in ((bool, wit.Value_BoolList), (int, wit.Value_S64List),
                              (float, wit.Value_F64List), (str, wit.Value_StringList)):
            if all(isinstance(i, kind) and (kind is bool or not isinstance(i, bool)) for i in items):
                return variant(items)
    return None


def key_values(attributes: Optional[types.Attributes]) -> list:
    pairs = []
    for key, v in (attributes or {}).items():
        converted = value(v)
        if converted is not None:
            pairs.append(wit.KeyValue(key, converted))
    return pairs


class CombSpan(trace.Span):
    """One comb span."""

    def __init__(self, span: wit.Span, owned: bool = True) -> None:
        self._span = span
        # The invocation span is comb's: ending it is comb's business.
        self._owned = owned
        self._ended = False

    def end(self, end_time: Optional[int] = None) -> None:
        if self._owned and not self._ended:
            self._ended = True
            self._span.end()

    def get_span_context(self) -> SpanContext:
        ids = self._span.context()
        return SpanContext(int(ids.trace_id, 16), int(ids.span_id, 16), is_remote=False,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED))

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._span.set_attributes(key_values(attributes))

    def set_attribute(self, key: str, v: types.AnyValue) -> None:
        converted = value(v)
        if converted is not None:
            self._span.set_attribute(key, converted)

    def add_event(self, name: str, attributes: types.Attributes = None,
                  timestamp: Optional[int] = None) -> None:
        self._span.add_event(name, key_values(attributes))

    def update_name(self, name: str) -> None:
        self._span.update_name(name)

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status, description: Optional[str] = None) -> None:
        if isinstance(status, Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is StatusCode.ERROR:
            self._span.set_status(wit.Status_Error(description or ""))
        elif code is StatusCode.OK:
            self._span.set_status(wit.Status_Ok())

    def record_exception(self, exception: BaseException, attributes: types.Attributes = None,
                         timestamp: Optional[int] = None, escaped: bool = False) -> None:
        self._span.record_error(type(exception).__name__, str(exception))

    def __repr__(self) -> str:
        return f"CombSpan({self.get_span_context()!r})"


class CombTracer(trace.Tracer):
    """Starts comb spans; one per instrumentation scope, all alike."""

    def start_span(self, name: str, context: Optional[otel_context.Context] = None,
                   kind: trace.SpanKind = trace.SpanKind.INTERNAL,
                   attributes: types.Attributes = None, links=None,
                   start_time: Optional[int] = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace.Span:
        span = CombSpan(wit.Span(name))
        if attributes:
            span.set_attributes(attributes)
        return span

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: Optional[otel_context.Context] = None,
                              kind: trace.SpanKind = trace.SpanKind.INTERNAL,
                              attributes: types.Attributes = None, links=None,
                              start_time: Optional[int] = None, record_exception: bool = True,
                              set_status_on_exception: bool = True,
                              end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                            set_status_on_exception=set_status_on_exception) as current:
            yield current


class CombTracerProvider(trace.TracerProvider):
    """The provider ``trace.get_tracer`` asks."""

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version=None,
                   schema_url=None, attributes=None) -> trace.Tracer:
        return CombTracer()


@contextlib.contextmanager
def invocation() -> Iterator[None]:
    """Makes comb's invocation span the current span while a handler runs,
    so ``trace.get_current_span()`` outside any ``with`` finds it."""
    token = otel_context.attach(trace.set_span_in_context(CombSpan(wit.current_span(), owned=False)))
    try:
        yield
    finally:
        otel_context.detach(token)


def record_on_invocation(error: BaseException) -> None:
    """An exception that escaped the handler, as an ``exception`` event."""
    wit.current_span().record_error(type(error).__name__, str(error))
