"""A Python plugin that fails, loops, allocates and uses OpenTelemetry's
API in every way a test asks of it."""

import logging

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from comb import BadRequest, Plugin, Request, Response

tracer = trace.get_tracer("tests.misbehave")
log = logging.getLogger("misbehave")

plugin = Plugin("misbehave_py", "0.1.0")


@plugin.route("GET", "/py/raise")
def fail(request: Request):
    raise ValueError("python plugin failed on purpose")


@plugin.route("GET", "/py/bad")
def bad(request: Request):
    raise BadRequest("no such thing")


@plugin.route("GET", "/py/spin")
def spin(request: Request):
    while True:
        pass


@plugin.route("GET", "/py/memory")
def memory(request: Request):
    # Past the 64 MiB limit in one step: refused as the memory grows, not
    # after filling pages a slow machine might take the deadline to fill.
    hoard = []
    while True:
        hoard.append(bytearray(96 << 20))


@plugin.route("POST", "/py/echo/:name")
def echo(request: Request):
    return Response.json(
        {
            "name": request.params["name"],
            "query": request.query,
            "header": request.header("X-Test"),
            "body": request.json(),
        },
        status=201,
    ).with_header("x-echo", "yes")


@plugin.route("GET", "/py/otel")
def otel(request: Request):
    # Outside any `with`: the invocation span.
    trace.get_current_span().set_attribute("app.where", "invocation")
    with tracer.start_as_current_span("outer", attributes={"app.level": 1}) as outer:
        outer.add_event("started", {"app.items": [1, 2, 3]})
        with tracer.start_as_current_span("inner"):
            span = trace.get_current_span()
            span.set_attribute("app.flag", True)
            span.set_attribute("app.ratio", 0.5)
            try:
                {}["missing"]
            except KeyError as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, "lookup failed"))
        log.warning("otel route done", exc_info=None)
    return {"ok": True}


# What outlives a call when the plugin reuses its instances.
calls = 0
kept = {}


@plugin.route("GET", "/py/count")
def count(request: Request):
    global calls
    calls += 1
    return {"count": calls}


@plugin.route("GET", "/py/keep")
def keep(request: Request):
    # This call's invocation span, and a span left open, kept for a later call.
    kept["invocation"] = trace.get_current_span()
    kept["open"] = tracer.start_span("left-open")
    return {"kept": True}


@plugin.route("GET", "/py/stale")
def stale(request: Request):
    for span in kept.values():
        span.set_attribute("app.stale", True)
        span.add_event("stale")
    kept["open"].end()
    return {"stale": True}


Manifest, Handler = plugin.exports()
