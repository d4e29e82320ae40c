// comb's JavaScript SDK: a plugin's routes, requests, responses and errors.
//
//   import { Plugin } from 'comb';
//   const plugin = new Plugin('hello', '0.1.0');
//   plugin.route('GET', '/hello/:name', (request) => ({ hello: request.params.name }));
//   export const { manifest, handler } = plugin.exports();
//
// Tracing is OpenTelemetry's own API (`@opentelemetry/api`): importing this
// module registers a tracer provider backed by comb's span interface, so
// `trace.getTracer(...).startActiveSpan(...)`, `trace.getActiveSpan()`,
// `setAttribute`, `setStatus` and `recordException` put spans in the
// request's trace under the invocation span. `console.*` lines arrive in
// comb's log and as events on the span.

import { context, trace } from '@opentelemetry/api';
import { currentSpan } from 'comb:plugin/tracing@0.1.0';
import { CombSpan, install } from './otel.js';

install();

/** The client's fault: comb answers 400 with this message. */
export class BadRequest extends Error {}

/** An incoming request, fully read. */
export class Request {
  constructor(request) {
    /** The HTTP method, upper case. */
    this.method = request.method;
    /** The path, without the query. */
    this.path = request.path;
    /** The route pattern that matched. */
    this.route = request.route;
    /** The route's parameters by name. */
    this.params = Object.fromEntries(request.params);
    /** The query parameters (a `URLSearchParams`). */
    this.query = new URLSearchParams(request.query);
    /** The headers as received, `[name, value]` pairs. */
    this.headers = request.headers;
    /** The body, a `Uint8Array`. */
    this.body = request.body;
  }

  /** The first value of header `name` (any case), or `undefined`. */
  header(name) {
    const lower = name.toLowerCase();
    return this.headers.find(([key]) => key.toLowerCase() === lower)?.[1];
  }

  /** The body as text. */
  text() {
    return new TextDecoder().decode(this.body);
  }

  /** The body as JSON; a body that is not JSON is the client's error. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (error) {
      throw new BadRequest(`the body is not JSON: ${error.message}`);
    }
  }
}

/** The HTTP response a handler returns. */
export class Response {
  constructor(status = 200, body = '', headers = []) {
    this.status = status;
    this.body = typeof body === 'string' ? new TextEncoder().encode(body) : body;
    this.headers = [...headers];
  }

  /** `value` as JSON. */
  static json(value, status = 200) {
    return new Response(status, JSON.stringify(value), [['content-type', 'application/json']]);
  }

  /** Plain UTF-8 text. */
  static text(text, status = 200) {
    return new Response(status, text, [['content-type', 'text/plain; charset=utf-8']]);
  }

  /** This response with one more header. */
  withHeader(name, value) {
    this.headers.push([name, value]);
    return this;
  }
}

/** A plugin's identity and routes. */
export class Plugin {
  constructor(name, version, description) {
    this.name = name;
    this.version = version;
    this.description = description;
    this.routes = new Map();
  }

  /** Serves `method pattern` with `handler(request)`, which returns a
   * `Response` or anything JSON (200). */
  route(method, pattern, handler) {
    this.routes.set(`${method.toUpperCase()} ${pattern}`, { method: method.toUpperCase(), pattern, handler });
    return this;
  }

  /** The `manifest` and `handler` exports comb calls:
   * `export const { manifest, handler } = plugin.exports();` */
  exports() {
    return {
      manifest: {
        describe: () => ({
          name: this.name,
          version: this.version,
          description: this.description,
          routes: [...this.routes.values()].map(({ method, pattern }) => ({ method, pattern })),
        }),
      },
      handler: { handle: (request) => this.#handle(request) },
    };
  }

  #handle(request) {
    const route =
      this.routes.get(`${request.method} ${request.route}`) ??
      (request.method === 'HEAD' ? this.routes.get(`GET ${request.route}`) : undefined) ??
      this.routes.get(`* ${request.route}`);
    if (!route) {
      throw { tag: 'internal', val: `no handler for ${request.method} ${request.route}` };
    }
    // The invocation span is the active span while the handler runs.
    const invocation = new CombSpan(currentSpan(), false);
    let result;
    try {
      result = context.with(trace.setSpan(context.active(), invocation), () => route.handler(new Request(request)));
    } catch (error) {
      if (error instanceof BadRequest) {
        throw { tag: 'bad-request', val: error.message };
      }
      // As an uncaught error would be: the stack on stderr (comb's log,
      // and an event on the span).
      console.error(error?.stack ?? String(error));
      invocation.recordException(error);
      throw { tag: 'internal', val: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
    } finally {
      // Its handle, given back now (see `CombSpan.release`).
      invocation.release();
    }
    const response = result instanceof Response ? result : Response.json(result);
    return { status: response.status, headers: response.headers, body: response.body };
  }
}
