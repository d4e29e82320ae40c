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
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(16 << 20).fill(1));
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

export const { manifest, handler } = plugin.exports();
