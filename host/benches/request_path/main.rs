//! Where the time of one request goes inside comb, stage by stage, so a
//! regression shows where it is: route lookup, instantiate + call of the
//! real home_activities plugin (with tracing off, and with spans recorded
//! by an SDK provider that exports nothing), and the whole axum app without
//! a socket.
//!
//! `cargo bench -p comb` (plugins are built first, as for the tests);
//! `instantiation.rs` breaks a fresh instance down part by part.

#![allow(missing_docs, reason = "benchmark binary")]

mod instantiation;

use std::sync::Arc;

use axum::body::Body;
use comb::{
    limits::Limits,
    plugins::{Lookup, Plugins, Route, RouteMethod, RouteOwner, RouteTable},
    runtime::{EngineConfig, RoutedRequest, Runtime},
    server::{AppState, app},
    spans,
};
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::{Context, trace::TraceContextExt as _};
use tower::ServiceExt as _;

fn request() -> RoutedRequest {
    RoutedRequest {
        http: http::Request::get("/api/activities/home")
            .body(Default::default())
            .unwrap(),
        route: "/api/activities/home".into(),
        params: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let built = xtask::build_plugins().expect("building the plugins");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for plugin in [
        "home_activities",
        "user_activities",
        "show_activity",
        "search_activities",
    ] {
        std::fs::copy(
            built.wasm(plugin),
            dir.path().join(format!("{plugin}.wasm")),
        )
        .unwrap();
    }
    // Old enough mtimes: the lifecycle does not wait for a copy to settle.
    std::thread::sleep(comb::plugins::SETTLE_TIME);
    let engine = EngineConfig {
        cache_dir: None,
        max_memory_bytes: comb::limits::DEFAULT_MEMORY_BYTES,
        fuel: false,
        pooling: true,
        perf_map: false,
    };
    let runtime = Arc::new(Runtime::new(&engine).unwrap());
    let mut plugins = Plugins::new(
        runtime.clone(),
        dir.path().to_owned(),
        Limits::default(),
        comb::plugins::DEFAULT_MAX_ROUTES,
    );
    tokio.block_on(plugins.reload()).unwrap();
    let routes = plugins.routes();
    let table = routes.load_full();

    c.bench_function("route lookup (4 plugins, parameter route)", |b| {
        b.iter(|| {
            matches!(
                table.lookup(&http::Method::GET, "/api/activities/@worf"),
                Lookup::Found { .. }
            )
        })
    });

    // Lookup cost against the size of the table: the same path among 10,
    // 1 000 and 100 000 routes of other plugins.
    let mut group = c.benchmark_group("route lookup among N routes");
    for size in [10, 1_000, 100_000] {
        let mut big = RouteTable::default();
        big.add(
            (0..size)
                .map(|i| Route {
                    method: RouteMethod::Only(http::Method::GET),
                    pattern: format!("/other/{i}/:id").parse().unwrap(),
                    target: Owner,
                })
                .chain(std::iter::once(Route {
                    method: RouteMethod::Only(http::Method::GET),
                    pattern: "/api/activities/@:handle".parse().unwrap(),
                    target: Owner,
                }))
                .collect(),
        )
        .unwrap();
        group.bench_function(size.to_string(), |b| {
            b.iter(|| {
                matches!(
                    big.lookup(&http::Method::GET, "/api/activities/@worf"),
                    Lookup::Found { .. }
                )
            })
        });
    }
    group.finish();

    let Lookup::Found { route, .. } = table.lookup(&http::Method::GET, "/api/activities/home")
    else {
        panic!("no route")
    };
    let plugin = route.target.clone();
    let home_activities = std::fs::read(built.wasm("home_activities")).unwrap();
    instantiation::bench(c, &tokio, &home_activities);
    c.bench_function("instantiate + call home_activities, tracing off", |b| {
        b.to_async(&tokio).iter(|| async {
            let (result, _) = plugin
                .invoke(
                    &runtime,
                    plugin.try_slot().unwrap(),
                    request(),
                    Context::new(),
                )
                .await;
            result.unwrap()
        })
    });

    // An SDK provider without exporters: spans are created, given ids and
    // attributes, and dropped at end — the cost the request path pays.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    opentelemetry::global::set_tracer_provider(provider);
    let tracer = spans::host_tracer();
    c.bench_function("instantiate + call home_activities, spans recorded", |b| {
        b.to_async(&tokio).iter(|| async {
            let cx =
                Context::new().with_span(opentelemetry::trace::Tracer::start(&tracer, "invoke"));
            let (result, _) = plugin
                .invoke(&runtime, plugin.try_slot().unwrap(), request(), cx.clone())
                .await;
            cx.span().end();
            result.unwrap()
        })
    });

    let app = app(Arc::new(AppState {
        routes: routes.clone(),
        runtime: runtime.clone(),
        tracer: Some(spans::host_tracer()),
        cors_allowed_origins: vec![],
        metrics: comb::metrics::Metrics::new(),
        rollbar: None,
        loaded: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    }));
    c.bench_function(
        "whole app without a socket (server span, invoke, response)",
        |b| {
            b.to_async(&tokio).iter(|| async {
                let request = http::Request::get("/api/activities/home")
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
            })
        },
    );
}

/// A route owner for tables built by hand.
struct Owner;

impl RouteOwner for Owner {
    fn owner_name(&self) -> &str {
        "bench"
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
