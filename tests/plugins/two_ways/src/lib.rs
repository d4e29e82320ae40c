//! Test plugin: N spans, each with two attributes, made the two ways a
//! Rust plugin can trace: `GET /two_ways/comb?n=N` with comb's span API
//! (`comb_sdk::trace`), `GET /two_ways/otel?n=N` with the OpenTelemetry
//! API over `wasi:otel` (`comb_sdk::otel`). Each span is a child of the
//! one before, the first a child of the invocation span.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use opentelemetry::{
    KeyValue,
    trace::{Span as _, TraceContextExt as _, Tracer as _},
};

struct TwoWays;

impl Plugin for TwoWays {
    fn manifest() -> Manifest {
        Manifest::new("two_ways", "0.0.1")
            .route("GET", "/two_ways/comb")
            .route("GET", "/two_ways/otel")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let n: u32 = (request.query_param("n"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
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
