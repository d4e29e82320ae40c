//! Test plugin: N spans, each with two attributes, made the two ways a
//! Rust plugin can trace: `GET /two_ways/comb?n=N` with comb's span API
//! (`comb_sdk::trace`), `GET /two_ways/otel?n=N` with the OpenTelemetry
//! API over `wasi:otel` (`comb_sdk::otel`). Each span is a child of the
//! one before, the first a child of the invocation span.
//!
//! For an instance comb reuses: `GET /two_ways/open` starts a span
//! `leaked` and keeps it open past its call; `GET /two_ways/close` ends
//! it in a later call (a span of another request's trace by then).

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use std::sync::Mutex;

use opentelemetry::{
    Context, KeyValue,
    trace::{Span as _, TraceContextExt as _, Tracer as _},
};

struct TwoWays;

/// The span `/two_ways/open` left open, for a later call of the instance.
static LEAKED: Mutex<Option<Context>> = Mutex::new(None);

impl Plugin for TwoWays {
    fn manifest() -> Manifest {
        Manifest::new("two_ways", "0.0.1")
            .route("GET", "/two_ways/comb")
            .route("GET", "/two_ways/otel")
            .route("GET", "/two_ways/open")
            .route("GET", "/two_ways/close")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let n: u32 = (request.query_param("n"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        if request.path == "/two_ways/open" {
            let tracer = comb_sdk::otel::tracer("two_ways");
            let invocation = comb_sdk::otel::invocation();
            let span = tracer.start_with_context("leaked", &invocation);
            *LEAKED.lock().unwrap_or_else(|e| e.into_inner()) = Some(invocation.with_span(span));
            return Ok(Response::text(200, "opened\n"));
        }
        if request.path == "/two_ways/close" {
            let leaked = LEAKED.lock().unwrap_or_else(|e| e.into_inner()).take();
            let said = match leaked {
                Some(cx) => {
                    cx.span().end();
                    "closed\n"
                }
                None => "nothing open\n",
            };
            return Ok(Response::text(200, said));
        }
        if request.path == "/two_ways/comb" {
            let spans: Vec<Span> = (0..n)
                .map(|i| {
                    let span = Span::start("work");
                    span.set("app.index", i64::from(i));
                    span.set("app.way", "comb");
                    span
                })
                .collect();
            // Innermost first, as they close.
            spans.into_iter().rev().for_each(Span::end);
        } else {
            let tracer = comb_sdk::otel::tracer("two_ways");
            let mut cx = comb_sdk::otel::invocation();
            let mut opened = Vec::new();
            for i in 0..n {
                let mut span = tracer.start_with_context("work", &cx);
                span.set_attribute(KeyValue::new("app.index", i64::from(i)));
                span.set_attribute(KeyValue::new("app.way", "otel"));
                cx = cx.with_span(span);
                opened.push(cx.clone());
            }
            for cx in opened.iter().rev() {
                cx.span().end();
            }
        }
        Ok(Response::text(200, format!("{n} spans\n")))
    }
}

comb_sdk::export!(TwoWays);
