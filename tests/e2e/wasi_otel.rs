//! `wasi:otel`: a standard component traced with the OpenTelemetry SDK
//! (`tests/plugins/otel_guest`, a span processor and a log processor over
//! the WIT) joins comb's trace, its spans exported as it made them, within
//! comb's bounds; and a hostile one writes nothing comb does not allow.

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, ArrayValue, any_value::Value as OtlpValue},
    metrics::v1::{metric::Data, number_data_point::Value as NumberValue},
    trace::v1::span::SpanKind,
};

use crate::{
    harness::{Comb, Options, client, get_json, trace_id},
    otlp::{ReceivedSpan, Receiver, find, named},
};

fn start(receiver: &Receiver) -> Comb {
    Comb::start(Options {
        plugins: &["otel_guest"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
        ..Options::default()
    })
}

fn array(values: Vec<OtlpValue>) -> OtlpValue {
    OtlpValue::ArrayValue(ArrayValue {
        values: values
            .into_iter()
            .map(|value| AnyValue { value: Some(value) })
            .collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_traced_with_the_otel_sdk_joins_the_request_s_trace() {
    let receiver = Receiver::start().await;
    let comb = start(&receiver);
    let response = client()
        .get(comb.at("/otel_guest/traced"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = trace_id(&response);
    assert_eq!(response.text().await.unwrap(), "traced\n");

    // server → invoke → handle → load → query, one trace.
    let spans = receiver.trace(&trace, 5).await;
    let invocation = named(&spans, "invoke otel_guest");
    let handle = named(&spans, "handle");
    let load = named(&spans, "load");
    let query = named(&spans, "query");
    assert_eq!(handle.parent_span_id, invocation.span_id);
    assert_eq!(load.parent_span_id, handle.span_id);
    assert_eq!(query.parent_span_id, load.span_id);
    // Nothing refused or dropped (the counts are set only when not zero).
    assert!(invocation.attribute("plugin.telemetry.refused").is_none());
    assert!(invocation.attribute("plugin.telemetry.dropped").is_none());

    // Exported as the guest made it: kind, scope, times, attributes of
    // every kind, a link, events, an error status; with comb's resource
    // and the plugin's name.
    assert_eq!(handle.kind, SpanKind::Server);
    assert_eq!(load.kind, SpanKind::Internal);
    for span in [handle, load, query] {
        assert_eq!(span.scope, "otel_guest", "{span:#?}");
        assert_eq!(span.scope_version, "1.2.3", "{span:#?}");
        assert_eq!(span.string("plugin.name"), "otel_guest");
        assert_eq!(span.resource, invocation.resource, "comb's resource");
        assert!(span.start_time_unix_nano >= invocation.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= invocation.end_time_unix_nano);
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    }
    assert_eq!(handle.string("app.string"), "text");
    assert!(handle.bool("app.bool"));
    assert_eq!(handle.int("app.int"), -42);
    assert_eq!(handle.double("app.float"), 2.5);
    let strings = |list: &[&str]| {
        array(
            list.iter()
                .map(|s| OtlpValue::StringValue((*s).into()))
                .collect(),
        )
    };
    assert_eq!(handle.attribute("app.strings"), Some(&strings(&["a", "b"])));
    assert_eq!(
        handle.attribute("app.bools"),
        Some(&array(vec![
            OtlpValue::BoolValue(true),
            OtlpValue::BoolValue(false)
        ]))
    );
    assert_eq!(
        handle.attribute("app.ints"),
        Some(&array((1..=3).map(OtlpValue::IntValue).collect()))
    );
    assert_eq!(
        handle.attribute("app.floats"),
        Some(&array(vec![
            OtlpValue::DoubleValue(0.5),
            OtlpValue::DoubleValue(1.5)
        ]))
    );
    // Ids written without zero padding arrive as the ids they are.
    assert_eq!(
        handle.links,
        [(format!("{:032x}", 0xabc), format!("{:016x}", 0xdef))]
    );
    let miss = load.event("cache.miss").expect("the guest's event");
    assert_eq!(
        find(miss, "app.key"),
        Some(&OtlpValue::StringValue("activities".into()))
    );
    assert_eq!(query.int("db.rows"), 0);
    assert_eq!(
        (query.status_code, query.status_message.as_str()),
        (2, "no rows")
    );

    // The log record: an event on the span it was logged in, and a line
    // in comb's log with that span's ids.
    let logged = load.event("log").expect("the log record on its span");
    let text = |key| find(logged, key).cloned();
    assert_eq!(
        text("log.message"),
        Some(OtlpValue::StringValue("loaded from the slow path".into()))
    );
    assert_eq!(
        text("log.severity"),
        Some(OtlpValue::StringValue("WARN".into()))
    );
    assert_eq!(text("app.rows"), Some(OtlpValue::IntValue(3)));
    let line = comb
        .log()
        .lines()
        .find(|line| line.contains("loaded from the slow path"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no log line in {}", comb.log()));
    assert!(line.contains(&format!("trace_id={trace}")), "{line}");
    assert!(
        line.contains(&format!("span_id={}", load.span_id)),
        "{line}"
    );

    // Its counter, read by the SDK's reader as the call ended, is comb's
    // metric under the plugin's name.
    let handled = receiver.wait_for_metric("app.handled", |_| true).await;
    assert_eq!(handled.unit, "{request}");
    let Some(Data::Sum(sum)) = &handled.data else {
        panic!("{handled:#?}")
    };
    let point = &sum.data_points[0];
    assert_eq!(
        point.value,
        Some(NumberValue::AsDouble(1.0)),
        "{handled:#?}"
    );
    for (key, value) in [("app.route", "/traced"), ("plugin.name", "otel_guest")] {
        assert_eq!(
            find(&point.attributes, key),
            Some(&OtlpValue::StringValue(value.into()))
        );
    }

    // comb's page shows the guest's spans in the trace.
    let (status, page) = get_json(&format!("{}/_comb/api/traces/{trace}", comb.admin_url)).await;
    assert_eq!(status, 200, "{page:#}");
    let on_page = |name: &str| {
        page["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} on the page: {page:#}"))
            .clone()
    };
    assert_eq!(on_page("query")["parent_span_id"], load.span_id.as_str());
    assert_eq!(on_page("handle")["attributes"]["app.int"], -42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_component_writes_only_what_comb_allows_through_wasi_otel() {
    let receiver = Receiver::start().await;
    let comb = start(&receiver);
    let response = client()
        .get(comb.at("/otel_guest/hostile"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = trace_id(&response);

    // 512 spans a call: 3 before the flood, so 509 of its 600.
    let spans = receiver.trace(&trace, 2 + 3 + 509).await;
    let invocation = named(&spans, "invoke otel_guest");
    let guest: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.scope == "hostile").collect();
    let count = |name: &str| guest.iter().filter(|s| s.name == name).count();
    assert_eq!(count("flood"), 509);
    assert_eq!(
        guest.len(),
        509 + 3,
        "{:#?}",
        guest.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // Refused: the forged trace's start and end, the invoke name and two
    // of comb's keys, the second end, the end never started, the stray
    // parent. Dropped: the 91 spans past the budget.
    assert_eq!(invocation.int("plugin.telemetry.refused"), 8);
    assert_eq!(invocation.int("plugin.telemetry.dropped"), 91);
    // Nothing in another trace.
    let forged = format!("{:032x}", 0x123456789abcdef_u128);
    assert!(receiver.spans().iter().all(|s| s.trace_id != forged));
    // comb's keys stay comb's, and no guest span passes for comb's own.
    let keys = named(&spans, "guest: invoke home_activities");
    assert_eq!(keys.string("plugin.name"), "otel_guest");
    assert_eq!(keys.string("app.kept"), "yes");
    assert!(keys.attribute("faas.coldstart").is_none(), "{keys:#?}");
    assert_eq!(count("twice"), 1);
    assert_eq!(count("never-started"), 0);
    let stray = named(&spans, "stray-parent");
    assert_eq!(stray.parent_span_id, invocation.span_id);
    // The host is unharmed.
    let response = client().get(comb.at("/otel_guest/traced")).send().await;
    assert_eq!(response.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_inside_a_guest_span_is_that_span_s_child() {
    let receiver = Receiver::start().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = upstream.local_addr().unwrap();
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(upstream, app).await });
    let comb = Comb::start(Options {
        plugins: &["otel_guest"],
        files: &[("otel_guest.toml", b"[sandbox]\nhttp = [\"127.0.0.1\"]\n")],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let response = client()
        .get(comb.at(&format!("/otel_guest/fetch?to={address}")))
        .send()
        .await
        .unwrap();
    let trace = trace_id(&response);
    assert_eq!(response.text().await.unwrap(), "fetched 200\n");

    // invoke → fetch (the guest's) → GET (comb's CLIENT span), as Spin
    // parents a host call's span under the guest's current one.
    let spans = receiver.trace(&trace, 4).await;
    let invocation = named(&spans, "invoke otel_guest");
    let fetch = named(&spans, "fetch");
    let call = (spans.iter())
        .find(|s| s.kind == SpanKind::Client)
        .unwrap_or_else(|| panic!("no CLIENT span in {spans:#?}"));
    assert_eq!(fetch.parent_span_id, invocation.span_id);
    assert_eq!(call.parent_span_id, fetch.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_plugin_traces_with_the_otel_api_as_with_comb_s_own() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["two_ways"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    // The same three nested spans, through comb's span API and through the
    // OpenTelemetry API (comb-sdk's `otel` feature): the same tree.
    for way in ["comb", "otel"] {
        let response = client()
            .get(comb.at(&format!("/two_ways/{way}?n=3")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{way}");
        let trace = trace_id(&response);
        let spans = receiver.trace(&trace, 5).await;
        let mut parent = named(&spans, "invoke two_ways").span_id.clone();
        for index in 0..3 {
            let span = (spans.iter())
                .find(|s| s.name == "work" && s.parent_span_id == parent)
                .unwrap_or_else(|| panic!("{way}: no work span under {parent}: {spans:#?}"));
            assert_eq!(span.int("app.index"), index, "{way}");
            assert_eq!(span.string("app.way"), way);
            assert_eq!(span.string("plugin.name"), "two_ways", "{way}");
            parent = span.span_id.clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_s_own_metrics_go_out_with_comb_s_under_its_name() {
    let receiver = Receiver::start().await;
    let comb = start(&receiver);
    // Three calls, three fresh instances: each exports its cumulative
    // counter at 2, so comb's counter is at 6.
    let mut traces = Vec::new();
    for _ in 0..3 {
        let response = client()
            .get(comb.at("/otel_guest/measured"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        traces.push(trace_id(&response));
    }
    let route = |attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        find(attributes, "app.route") == Some(&OtlpValue::StringValue("/traced".into()))
    };
    let total = |metric: &opentelemetry_proto::tonic::metrics::v1::Metric| match &metric.data {
        Some(Data::Sum(sum)) => (sum.data_points.iter())
            .filter(|p| route(&p.attributes))
            .map(|p| match p.value {
                Some(NumberValue::AsDouble(v)) => v,
                Some(NumberValue::AsInt(v)) => v as f64,
                None => 0.0,
            })
            .sum::<f64>(),
        _ => 0.0,
    };
    let requests = receiver
        .wait_for_metric("app.requests", |m| total(m) >= 6.0)
        .await;
    assert_eq!(total(&requests), 6.0, "{requests:#?}");
    assert_eq!(requests.unit, "{request}");
    let Some(Data::Sum(sum)) = &requests.data else {
        panic!("{requests:#?}")
    };
    assert!(sum.is_monotonic);
    // Every point carries the plugin's identity: the one that named
    // another plugin lost that key.
    for point in &sum.data_points {
        let string = |key| match find(&point.attributes, key) {
            Some(OtlpValue::StringValue(s)) => s.clone(),
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(string("plugin.name"), "otel_guest");
        assert_eq!(string("plugin.version"), "0.0.0");
    }
    let queue = receiver.wait_for_metric("app.queue", |_| true).await;
    assert!(matches!(queue.data, Some(Data::Gauge(_))), "{queue:#?}");
    // The histogram could not be re-recorded; the forged key and the
    // gauge named like comb's `faas.invoke_duration` (a histogram) were
    // refused.
    assert!(receiver.metric("app.latency").is_none());
    let gauges = receiver
        .metric_exports()
        .into_iter()
        .flat_map(|(_, request)| {
            request
                .resource_metrics
                .into_iter()
                .flat_map(|r| r.scope_metrics)
        });
    assert!(
        !gauges
            .flat_map(|s| s.metrics)
            .any(|m| m.name == "faas.invoke_duration" && matches!(m.data, Some(Data::Gauge(_)))),
        "a guest's gauge named like comb's metric"
    );
    let spans = receiver.trace(&traces[0], 2).await;
    let invocation = named(&spans, "invoke otel_guest");
    assert_eq!(invocation.int("plugin.telemetry.dropped"), 1);
    assert_eq!(invocation.int("plugin.telemetry.refused"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_0_3_service_reports_its_spans_through_wasi_otel_too() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["service_hello"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let response = client()
        .get(comb.at("/service_hello/otel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = trace_id(&response);
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke service_hello");
    let work = named(&spans, "service-work");
    assert_eq!(work.parent_span_id, invocation.span_id);
    assert_eq!(work.span_id, format!("{:016x}", 0x5e1f));
    assert_eq!(work.string("app.wasi"), "0.3");
    assert_eq!(work.string("plugin.name"), "service_hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_span_left_open_does_not_outlive_its_call_in_a_reused_instance() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["two_ways"],
        files: &[(
            "two_ways.toml",
            b"[limits]\nmax_instance_reuse_count = 10\n",
        )],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let mut traces = Vec::new();
    for (path, said) in [
        ("/two_ways/open", "opened\n"),
        ("/two_ways/close", "closed\n"),
        ("/two_ways/otel?n=1", "1 spans\n"),
    ] {
        let response = client().get(comb.at(path)).send().await.unwrap();
        traces.push(trace_id(&response));
        assert_eq!(response.text().await.unwrap(), said, "{path}");
    }
    // The first call left its span open: its data never came, counted.
    let opened = receiver.trace(&traces[0], 2).await;
    let invocation = named(&opened, "invoke two_ways");
    assert_eq!(invocation.int("plugin.telemetry.dropped"), 1);
    // The next call of the same instance ended it: a span of the first
    // request's trace, refused.
    let closed = receiver.trace(&traces[1], 2).await;
    let invocation = named(&closed, "invoke two_ways");
    assert_eq!(
        invocation.int("plugin.instance.call"),
        2,
        "a reused instance"
    );
    assert_eq!(invocation.int("plugin.telemetry.refused"), 1);
    // A later call's spans have arrived; `leaked` never did.
    receiver.trace(&traces[2], 3).await;
    assert!(receiver.spans().iter().all(|s| s.name != "leaked"));
}
