// A JavaScript plugin that fails, loops, allocates and uses OpenTelemetry's
// API in every way a test asks of it (the Python misbehave's twin).

import { SpanStatusCode, trace } from '@opentelemetry/api';
import { BadRequest, Plugin, Response } from 'comb';

const tracer = trace.getTracer('tests.misbehave');
const plugin = new Plugin('misbehave_js', '0.1.0');

plugin.route('GET', '/js/raise', () => {
  throw new TypeError('javascript plugin failed on purpose');
});

plugin.route('GET', '/js/bad', () => {
  throw new BadRequest('no such thing');
});

plugin.route('GET', '/js/spin', () => {
  for (;;) {}
});

plugin.route('GET', '/js/memory', () => {
  // Past the 64 MiB limit in one step: refused as the memory grows, not
  // after filling pages a slow machine might take the deadline to fill.
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(96 << 20).fill(1));
});

plugin.route('POST', '/js/echo/:name', (request) =>
  Response.json(
    {
      name: request.params.name,
      query: Object.fromEntries(request.query),
      header: request.header('X-Test'),
      body: request.json(),
    },
    201,
  ).withHeader('x-echo', 'yes'),
);

plugin.route('GET', '/js/otel', () => {
  // Outside any span: the invocation span.
  trace.getActiveSpan().setAttribute('app.where', 'invocation');
  tracer.startActiveSpan('outer', { attributes: { 'app.level': 1 } }, (outer) => {
    outer.addEvent('started', { 'app.items': [1, 2, 3] });
    tracer.startActiveSpan('inner', (inner) => {
      const span = trace.getActiveSpan();
      span.setAttribute('app.flag', true);
      span.setAttribute('app.ratio', 0.5);
      try {
        JSON.parse('{');
      } catch (error) {
        span.recordException(error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: 'lookup failed' });
      }
      inner.end();
    });
    console.log('otel route done');
    outer.end();
  });
  return { ok: true };
});

// What outlives a call when the plugin reuses its instances.
let calls = 0;
const kept = {};

plugin.route('GET', '/js/count', () => ({ count: ++calls }));

plugin.route('GET', '/js/keep', () => {
  // This call's invocation span, and a span left open, kept for a later call.
  kept.invocation = trace.getActiveSpan();
  kept.open = tracer.startSpan('left-open');
  return { kept: true };
});

plugin.route('GET', '/js/stale', () => {
  for (const span of Object.values(kept)) {
    span.setAttribute('app.stale', true);
    span.addEvent('stale');
  }
  kept.open.end();
  return { stale: true };
});

export const { manifest, handler } = plugin.exports();
