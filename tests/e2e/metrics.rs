//! What comb exports as metrics, read back from a real OTLP receiver:
//! semantic-convention names and units, per-plugin attributes, and nothing
//! high-cardinality.

use opentelemetry_proto::tonic::{
    common::v1::KeyValue,
    metrics::v1::{HistogramDataPoint, Metric, NumberDataPoint, metric::Data},
};

use crate::{
    harness::{Comb, Options, client, eventually, get_json, get_response, trace_id},
    otlp::{Receiver, find},
};

/// The boundaries semantic conventions advise for
/// `http.server.request.duration`.
const SEMCONV_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn histogram(metric: &Metric) -> &[HistogramDataPoint] {
    match &metric.data {
        Some(Data::Histogram(h)) => &h.data_points,
        other => panic!("{} is not a histogram: {other:?}", metric.name),
    }
}

fn sum(metric: &Metric) -> &[NumberDataPoint] {
    match &metric.data {
        Some(Data::Sum(s)) => &s.data_points,
        other => panic!("{} is not a sum: {other:?}", metric.name),
    }
}

fn has(attributes: &[KeyValue], key: &str, value: &str) -> bool {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match find(attributes, key) {
        Some(Value::StringValue(s)) => s == value,
        Some(Value::IntValue(i)) => i.to_string() == value,
        _ => false,
    }
}

fn int_value(point: &NumberDataPoint) -> i64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match point.value {
        Some(Value::AsInt(v)) => v,
        other => panic!("not an int point: {other:?}"),
    }
}

/// Total count of the histogram points whose attributes satisfy `pick`.
fn count(points: &[HistogramDataPoint], pick: impl Fn(&[KeyValue]) -> bool) -> u64 {
    points
        .iter()
        .filter(|p| pick(&p.attributes))
        .map(|p| p.count)
        .sum()
}

async fn requests(comb: &Comb) {
    let client = client();
    for path in [
        "/api/activities/home",
        "/api/activities/home",
        "/api/activities/home",
        "/faulty/ok",
        "/faulty/error",
        "/faulty/error",
        "/nowhere",
    ] {
        client.get(comb.at(path)).send().await.expect("GET");
    }
}

/// Waits until the three home_activities calls of [`requests`] are in the
/// exported `faas.invoke_duration`.
async fn home_invocations_exported(receiver: &Receiver) {
    receiver
        .wait_for_metric("faas.invoke_duration", |m| {
            count(histogram(m), |a| has(a, "plugin.name", "home_activities")) >= 3
        })
        .await;
}

async fn exported_metrics(protocol: &str) {
    let receiver = Receiver::start().await;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_url.clone(),
        _ => receiver.http_url.clone(),
    };
    let comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
        ..Options::default()
    });
    requests(&comb).await;

    let duration = receiver
        .wait_for_metric("http.server.request.duration", |m| {
            count(histogram(m), |_| true) >= 7
        })
        .await;
    assert_eq!(duration.unit, "s");
    let points = histogram(&duration);
    assert_eq!(points[0].explicit_bounds, SEMCONV_BUCKETS);
    let home = |a: &[KeyValue]| {
        has(a, "http.route", "/api/activities/home")
            && has(a, "http.response.status_code", "200")
            && has(a, "http.request.method", "GET")
            && has(a, "plugin.name", "home_activities")
    };
    assert_eq!(count(points, home), 3, "{points:#?}");
    let failed = |a: &[KeyValue]| {
        has(a, "http.route", "/faulty/error")
            && has(a, "http.response.status_code", "500")
            && has(a, "error.type", "plugin.error")
    };
    assert_eq!(count(points, failed), 2, "{points:#?}");
    // A 404 has no route; its path must not become an attribute.
    assert_eq!(
        count(points, |a| has(a, "http.response.status_code", "404")
            && find(a, "http.route").is_none()),
        1
    );
    for point in points {
        for kv in &point.attributes {
            assert!(
                !["url.path", "url.full", "trace_id", "client.address"].contains(&kv.key.as_str()),
                "high-cardinality attribute {} on http.server.request.duration",
                kv.key
            );
        }
    }

    let invoke = receiver
        .wait_for_metric("faas.invoke_duration", |m| {
            count(histogram(m), |_| true) >= 6
        })
        .await;
    assert_eq!(invoke.unit, "s");
    let invoke = histogram(&invoke);
    assert_eq!(
        count(invoke, |a| has(a, "plugin.name", "home_activities")),
        3
    );
    assert_eq!(count(invoke, |a| has(a, "plugin.name", "faulty")), 3);
    assert!(
        invoke
            .iter()
            .all(|p| has(&p.attributes, "faas.trigger", "http")
                && find(&p.attributes, "plugin.version").is_some())
    );

    let init = receiver
        .wait_for_metric("faas.init_duration", |m| count(histogram(m), |_| true) >= 6)
        .await;
    assert_eq!(init.unit, "s");
    // Guest CPU and peak memory per call, with the call's attributes.
    for (name, unit) in [("faas.cpu_usage", "s"), ("faas.mem_usage", "By")] {
        let usage = receiver
            .wait_for_metric(name, |m| count(histogram(m), |_| true) >= 6)
            .await;
        assert_eq!(usage.unit, unit);
        let usage = histogram(&usage);
        let home = |a: &[KeyValue]| has(a, "plugin.name", "home_activities");
        assert_eq!(count(usage, home), 3, "{name}: {usage:#?}");
        let failed = |a: &[KeyValue]| has(a, "error.type", "plugin.error");
        assert_eq!(count(usage, failed), 2, "{name}: {usage:#?}");
    }

    let errors = receiver.wait_for_metric("faas.errors", |_| true).await;
    let errors = sum(&errors);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(has(&errors[0].attributes, "plugin.name", "faulty"));
    assert!(has(&errors[0].attributes, "error.type", "plugin.error"));
    assert_eq!(int_value(&errors[0]), 2);

    let coldstarts = receiver.wait_for_metric("faas.coldstarts", |_| true).await;
    let coldstarts = sum(&coldstarts);
    assert_eq!(coldstarts.len(), 2, "one per plugin: {coldstarts:#?}");
    assert!(coldstarts.iter().all(|p| int_value(p) == 1));

    let loads = receiver
        .wait_for_metric("comb.plugin.loads", |_| true)
        .await;
    let loads = sum(&loads);
    assert_eq!(loads.len(), 1);
    assert!(has(&loads[0].attributes, "plugin.load.outcome", "loaded"));
    assert_eq!(int_value(&loads[0]), 2);

    let (transport, _) = receiver.metric("faas.invoke_duration").unwrap();
    assert_eq!(transport, if protocol == "grpc" { "grpc" } else { "http" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_over_http_with_semconv_names() {
    exported_metrics("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_over_grpc() {
    exported_metrics("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_endpoint_exports_no_metrics() {
    let receiver = Receiver::start().await;
    // Only traces go to the receiver: metrics have no endpoint of their own.
    let traces = format!("{}/v1/traces", receiver.http_url);
    let mut comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
        ],
        ..Options::default()
    });
    requests(&comb).await;
    // Stopping flushes whatever comb would export.
    assert!(comb.stop(), "{}", comb.log());
    assert!(receiver.metric("faas.invoke_duration").is_none());
    assert!(!comb.log().contains("metrics: OTLP"), "{}", comb.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_endpoint_alone_exports_metrics_and_no_traces() {
    let receiver = Receiver::start().await;
    let metrics = format!("{}/v1/metrics", receiver.http_url);
    let mut comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        env: &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &metrics),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    requests(&comb).await;
    home_invocations_exported(&receiver).await;
    // Traces have no endpoint: comb's log says so, the receiver gets none.
    assert!(
        comb.log().contains("no OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        comb.log()
    );
    assert!(comb.stop(), "{}", comb.log());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_metrics_exporter_none_exports_traces_only() {
    let receiver = Receiver::start().await;
    let mut comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let response = get_response(comb.at("/api/activities/home")).await;
    assert_eq!(response.status(), 200);
    receiver.trace(&trace_id(&response), 2).await;
    assert!(comb.stop(), "{}", comb.log());
    assert!(receiver.metric("faas.invoke_duration").is_none());
    let log = comb.log();
    assert!(log.contains("metrics: OTEL_METRICS_EXPORTER=none"), "{log}");
    // No refused exports to warn about, as with a trace-only backend.
    assert!(
        !log.lines().any(|line| {
            (line.contains("WARN") || line.contains("ERROR"))
                && (line.contains("opentelemetry") || line.contains("export failed"))
        }),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_traces_exporter_none_exports_metrics_only_and_the_page_still_records() {
    let receiver = Receiver::start().await;
    let mut comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_TRACES_EXPORTER", "none"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    requests(&comb).await;
    home_invocations_exported(&receiver).await;
    let stats = format!("{}/_comb/api/stats?window=300", comb.admin_url);
    eventually("comb's page recorded the calls", &comb, || async {
        let (_, stats) = get_json(&stats).await;
        (stats["plugins"].as_array())
            .is_some_and(|plugins| plugins.iter().any(|p| p["plugin"] == "home_activities"))
    })
    .await;
    assert!(comb.stop(), "{}", comb.log());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
    assert!(
        comb.log().contains("traces: OTEL_TRACES_EXPORTER=none"),
        "{}",
        comb.log()
    );
}

/// `faas.cpu_usage` and `faas.mem_usage`: every call's guest CPU time and
/// peak linear memory, by plugin — also for calls no trace samples (the
/// guest's CPU clock otherwise runs only for recorded invocation spans).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cpu_and_memory_are_metrics_of_every_call_sampled_or_not() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ],
        ..Options::default()
    });
    for _ in 0..3 {
        let response = get_response(comb.at("/api/activities/home")).await;
        assert_eq!(response.status(), 200);
    }
    let home = |a: &[KeyValue]| {
        has(a, "plugin.name", "home_activities") && find(a, "plugin.version").is_some()
    };
    let cpu = receiver
        .wait_for_metric("faas.cpu_usage", |m| count(histogram(m), home) >= 3)
        .await;
    assert_eq!(cpu.unit, "s");
    let point = &histogram(&cpu)[0];
    assert_eq!(point.count, 3, "{point:#?}");
    assert!(point.sum.unwrap_or_default() > 0.0, "measured: {point:#?}");
    let memory = receiver
        .wait_for_metric("faas.mem_usage", |m| count(histogram(m), home) >= 3)
        .await;
    assert_eq!(memory.unit, "By");
    let point = &histogram(&memory)[0];
    assert!(
        point.min.unwrap_or_default() >= 65_536.0,
        "a page at least: {point:#?}"
    );
    // Nothing was traced.
    assert!(
        receiver
            .spans()
            .iter()
            .all(|s| s.name != "invoke home_activities")
    );
}
