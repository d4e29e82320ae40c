// OpenTelemetry's JavaScript API backed by comb's span interface.
//
// `@opentelemetry/api` is the real package; only its provider and context
// manager are comb's. Each span is a `comb:plugin/tracing` span, so it lands
// in the request's trace under the invocation span, as a Rust plugin's
// does. comb parents a new span on the innermost span the plugin has open
// (what nested `startActiveSpan` calls give); a context naming another
// parent is not followed. The context manager is a synchronous stack: a
// handler runs to completion in one call.

import { ROOT_CONTEXT, SpanStatusCode, TraceFlags, context, trace } from '@opentelemetry/api';
import { Span as WitSpan } from 'comb:plugin/tracing@0.1.0';

/** An attribute value in comb's form, or `undefined` for what it cannot hold. */
function value(v) {
  if (typeof v === 'boolean') return { tag: 'bool', val: v };
  if (typeof v === 'number') return Number.isInteger(v) ? { tag: 's64', val: BigInt(v) } : { tag: 'f64', val: v };
  if (typeof v === 'string') return { tag: 'string', val: v };
  if (Array.isArray(v)) {
    if (v.every((i) => typeof i === 'boolean')) return { tag: 'bool-list', val: v };
    if (v.every((i) => Number.isInteger(i))) return { tag: 's64-list', val: v.map(BigInt) };
    if (v.every((i) => typeof i === 'number')) return { tag: 'f64-list', val: v };
    if (v.every((i) => typeof i === 'string')) return { tag: 'string-list', val: v };
  }
  return undefined;
}

function keyValues(attributes) {
  return Object.entries(attributes ?? {})
    .map(([key, v]) => ({ key, value: value(v) }))
    .filter((pair) => pair.value !== undefined);
}

/** How the bindings name a resource's drop (as they define it). */
const dispose = Symbol.dispose ?? Symbol.for('dispose');

/** One comb span, as the API's `Span`. */
export class CombSpan {
  /** `owned`: false for the invocation span, which comb ends. */
  constructor(span, owned = true) {
    this.span = span;
    this.owned = owned;
    this.ended = false;
    /** Its context, kept once the handle is given back. */
    this.context = undefined;
  }

  spanContext() {
    if (this.context === undefined) {
      const { traceId, spanId } = this.span.context();
      this.context = { traceId, spanId, traceFlags: TraceFlags.SAMPLED, isRemote: false };
    }
    return this.context;
  }

  setAttribute(key, v) {
    const converted = value(v);
    if (converted !== undefined && !this.ended) this.span.setAttribute(key, converted);
    return this;
  }

  setAttributes(attributes) {
    if (!this.ended) this.span.setAttributes(keyValues(attributes));
    return this;
  }

  addEvent(name, attributesOrTime) {
    const attributes = typeof attributesOrTime === 'object' && !(attributesOrTime instanceof Date) ? attributesOrTime : {};
    if (!this.ended) this.span.addEvent(name, keyValues(attributes));
    return this;
  }

  addLink() {
    return this;
  }

  addLinks() {
    return this;
  }

  setStatus({ code, message }) {
    if (this.ended) return this;
    if (code === SpanStatusCode.ERROR) this.span.setStatus({ tag: 'error', val: message ?? '' });
    else if (code === SpanStatusCode.OK) this.span.setStatus({ tag: 'ok' });
    return this;
  }

  updateName(name) {
    if (!this.ended) this.span.updateName(name);
    return this;
  }

  /** Ends the span (the invocation span is comb's to end) and gives its
   * handle back. */
  end() {
    if (this.owned && !this.ended) {
      this.span.end();
      this.release();
    }
  }

  /** Gives the host handle back now, not when the garbage collector gets
   * to it: an instance that serves many requests would otherwise hold a
   * handle per span it ever made, and meet comb's handle limit. The span
   * ignores updates from then on, as an ended span does. */
  release() {
    if (this.ended) return;
    this.spanContext();
    this.ended = true;
    this.span[dispose]();
  }

  isRecording() {
    return !this.ended;
  }

  recordException(exception) {
    if (this.ended) return;
    const type = typeof exception === 'string' ? 'Error' : (exception?.name ?? exception?.constructor?.name ?? 'Error');
    const message = typeof exception === 'string' ? exception : (exception?.message ?? String(exception));
    this.span.recordError(String(type), String(message));
  }
}

class CombTracer {
  startSpan(name, options = {}) {
    const span = new CombSpan(new WitSpan(name));
    if (options.attributes) span.setAttributes(options.attributes);
    return span;
  }

  // (name, fn), (name, options, fn), (name, options, context, fn)
  startActiveSpan(name, ...args) {
    const fn = args.pop();
    const [options = {}, parent = context.active()] = args;
    const span = this.startSpan(name, options, parent);
    return context.with(trace.setSpan(parent, span), fn, undefined, span);
  }
}

class CombTracerProvider {
  getTracer() {
    return new CombTracer();
  }
}

/** The active context: a stack, as a handler's calls nest. */
class StackContextManager {
  constructor() {
    this.stack = [ROOT_CONTEXT];
  }

  active() {
    return this.stack[this.stack.length - 1];
  }

  with(ctx, fn, thisArg, ...args) {
    this.stack.push(ctx);
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.stack.pop();
    }
  }

  bind(ctx, target) {
    return typeof target === 'function' ? (...args) => this.with(ctx, target, undefined, ...args) : target;
  }

  enable() {
    return this;
  }

  disable() {
    this.stack = [ROOT_CONTEXT];
    return this;
  }
}

/** Makes comb the global tracer provider and context manager. */
export function install() {
  context.setGlobalContextManager(new StackContextManager());
  trace.setGlobalTracerProvider(new CombTracerProvider());
}
