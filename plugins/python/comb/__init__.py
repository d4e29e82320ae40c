"""comb's Python SDK: a plugin's routes, requests, responses and errors.

A plugin is one module (``app.py``) that declares a :class:`Plugin`, its
routes, and exports what comb calls::

    from comb import Plugin, Request

    plugin = Plugin("hello", "0.1.0", description="Says hello")

    @plugin.route("GET", "/hello/@:name")
    def hello(request: Request):
        return {"hello": request.params["name"]}

    Manifest, Handler = plugin.exports()

Tracing is OpenTelemetry's own Python API (``from opentelemetry import
trace``): importing this package installs a tracer provider backed by
comb's span interface, so ``trace.get_tracer(...)``,
``start_as_current_span``, ``get_current_span()``, ``set_attribute``,
``set_status`` and ``record_exception`` put spans in the request's trace,
under the invocation span. Python's ``logging`` goes to comb's log
interface (a span event and a log line).

``cargo xtask plugins`` builds every ``plugins/python/*/app.py`` with
componentize-py against ``wit/plugin.wit``.
"""

import json as _json
import traceback as _traceback
import urllib.parse as _urlparse
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import types as _types

from . import _logging, _otel

__all__ = ["Plugin", "Request", "Response", "BadRequest"]

# The provider is installed when the component is built (componentize-py
# runs the module's top level then), so tracers got at import time work.
_otel.install()
_logging.install()


class BadRequest(Exception):
    """The client's fault: comb answers 400 with this message."""


class Request:
    """An incoming request, fully read."""

    def __init__(self, request: _types.Request) -> None:
        #: The HTTP method, upper case.
        self.method: str = request.method
        #: The path, without the query.
        self.path: str = request.path
        #: The route pattern that matched, e.g. ``/api/activities/@:handle``.
        self.route: str = request.route
        #: The route's parameters by name.
        self.params: Dict[str, str] = dict(request.params)
        #: The raw query string, without ``?``.
        self.query_string: str = request.query
        #: The headers as received (names lower case), repeated ones kept.
        self.headers: List[Tuple[str, str]] = list(request.headers)
        #: The body.
        self.body: bytes = bytes(request.body)

    @property
    def query(self) -> Dict[str, str]:
        """The query parameters, the last value of a repeated one."""
        return dict(_urlparse.parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str) -> Optional[str]:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON is the client's error."""
        try:
            return _json.loads(self.body)
        except ValueError as error:
            raise BadRequest(f"the body is not JSON: {error}") from None


class Response:
    """The HTTP response a handler returns."""

    def __init__(
        self,
        status: int = 200,
        body: Union[bytes, str] = b"",
        headers: Iterable[Tuple[str, str]] = (),
    ) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = list(headers)

    @classmethod
    def json(cls, value: Any, status: int = 200) -> "Response":
        """``value`` as compact JSON."""
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return cls(status, body, [("content-type", "application/json")])

    @classmethod
    def text(cls, text: str, status: int = 200) -> "Response":
        """Plain UTF-8 text."""
        return cls(status, text, [("content-type", "text/plain; charset=utf-8")])

    def with_header(self, name: str, value: str) -> "Response":
        """This response with one more header."""
        self.headers.append((name, value))
        return self


#: What a handler may return: a response, or anything JSON (200).
Handler = Callable[[Request], Any]


class Plugin:
    """A plugin's identity and routes."""

    def __init__(self, name: str, version: str, description: Optional[str] = None) -> None:
        self.name = name
        self.version = version
        self.description = description
        self._routes: Dict[Tuple[str, str], Handler] = {}

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Declares that the decorated function serves ``method pattern``."""

        def register(handler: Handler) -> Handler:
            self._routes[(method.upper(), pattern)] = handler
            return handler

        return register

    def exports(self) -> Tuple[type, type]:
        """The ``Manifest`` and ``Handler`` classes comb calls; bind them
        at the top of the module: ``Manifest, Handler = plugin.exports()``."""
        plugin = self

        class Manifest(_exports.Manifest):
            def describe(self) -> _types.Manifest:
                routes = [_types.Route(method, pattern) for method, pattern in plugin._routes]
                return _types.Manifest(plugin.name, plugin.version, plugin.description, routes)

        class Handler(_exports.Handler):
            def handle(self, request: _types.Request) -> _types.Response:
                return plugin._handle(request)

        return Manifest, Handler

    def _handle(self, request: _types.Request) -> _types.Response:
        handler = self._routes.get((request.method, request.route))
        if handler is None and request.method == "HEAD":
            handler = self._routes.get(("GET", request.route))
        if handler is None:
            handler = self._routes.get(("*", request.route))
        if handler is None:
            raise Err(_types.HandlerError_Internal(f"no handler for {request.method} {request.route}"))
        # The invocation span is the current span while the handler runs.
        try:
            with _otel.invocation():
                result = handler(Request(request))
            response = result if isinstance(result, Response) else Response.json(result)
        except BadRequest as error:
            raise Err(_types.HandlerError_BadRequest(str(error))) from None
        except Exception as error:
            # As Python does for an uncaught exception: the traceback on
            # stderr (comb's log, and an event on the span).
            _traceback.print_exc()
            _otel.record_on_invocation(error)
            message = "".join(_traceback.format_exception_only(error)).strip()
            raise Err(_types.HandlerError_Internal(message)) from None
        return _types.Response(response.status, response.headers, response.body)
