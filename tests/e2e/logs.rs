//! Plugins' log lines as OTLP log records, read back from a real receiver:
//! the `log` interface, stdout and stderr, and `wasi:otel` log records,
//! each with its severity, body, attributes, plugin, trace and span; over
//! either transport; under the same per-call bounds as the span events;
//! and none with `OTEL_LOGS_EXPORTER=none`.

use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;

use crate::{
    harness::{Comb, Options, get_response, trace_id},
    otlp::{ReceivedLog, Receiver, find, named},
};

/// comb traced and logging to `receiver` over `protocol`.
fn start(receiver: &Receiver, protocol: &str, extra: &[(&str, &str)]) -> Comb {
    let endpoint = match protocol {
        "grpc" => receiver.grpc_url.clone(),
        _ => receiver.http_url.clone(),
    };
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ];
    env.extend_from_slice(extra);
    Comb::start(Options {
        plugins: &["misbehave", "otel_guest"],
        env: &env,
        ..Options::default()
    })
}

/// GETs `path`, expecting 200; returns its trace id.
async fn call(comb: &Comb, path: &str) -> String {
    let response = get_response(comb.at(path)).await;
    assert_eq!(response.status(), 200, "{path}");
    trace_id(&response)
}

/// The one record whose body is `body`.
fn record<'a>(logs: &'a [ReceivedLog], body: &str) -> &'a ReceivedLog {
    let matching: Vec<_> = logs.iter().filter(|log| log.body() == body).collect();
    assert_eq!(matching.len(), 1, "one record {body:?} in {logs:#?}");
    matching[0]
}

async fn log_records(protocol: &str) {
    let receiver = Receiver::start().await;
    let comb = start(&receiver, protocol, &[]);
    let printed = call(&comb, "/misbehave/print").await;
    let logged = call(&comb, "/misbehave/log?lines=2").await;
    let standard = call(&comb, "/otel_guest/traced").await;
    let logs = receiver
        .wait_for_logs("the guests' lines arrive as log records", |logs| {
            [
                "to stderr",
                "to stdout in inner",
                "unfinished",
                "line 1",
                "loaded from the slow path",
            ]
            .iter()
            .all(|body| logs.iter().any(|log| log.body() == *body))
        })
        .await;
    let transport = if protocol == "grpc" { "grpc" } else { "http" };
    assert!(logs.iter().all(|log| log.transport == transport));

    // stdout and stderr: INFO and WARN, the stream named, in the span the
    // guest had open when it wrote the line, as on the span events.
    let spans = receiver.trace(&printed, 4).await;
    let stderr = record(&logs, "to stderr");
    assert_eq!(
        (
            stderr.record.severity_number,
            stderr.record.severity_text.as_str()
        ),
        (13, "WARN")
    );
    assert_eq!(stderr.string("log.iostream"), Some("stderr"));
    assert_eq!(stderr.string("plugin.name"), Some("misbehave"));
    assert!(stderr.string("plugin.version").is_some());
    assert_eq!(stderr.scope.0, "misbehave", "the plugin is the scope");
    assert_eq!(
        stderr.ids(),
        (printed.clone(), named(&spans, "misbehave").span_id.clone())
    );
    assert_eq!(stderr.record.flags & 1, 1, "sampled");
    assert!(stderr.record.time_unix_nano > 0);
    assert!(
        stderr.resource.iter().any(|kv| kv.key == "service.name"),
        "comb's resource: {:?}",
        stderr.resource
    );
    let stdout = record(&logs, "to stdout in inner");
    assert_eq!(stdout.record.severity_number, 9, "INFO");
    assert_eq!(stdout.string("log.iostream"), Some("stdout"));
    assert_eq!(stdout.ids().1, named(&spans, "inner").span_id);
    let unfinished = record(&logs, "unfinished");
    assert_eq!(
        unfinished.ids().1,
        named(&spans, "invoke misbehave").span_id
    );

    // The log interface: the guest's level and fields.
    let line = record(&logs, "line 1");
    assert_eq!(line.ids().0, logged);
    assert_eq!(line.record.severity_text, "INFO");
    assert_eq!(
        find(&line.record.attributes, "app.line"),
        Some(&OtlpValue::IntValue(1))
    );

    // A wasi:otel log record, in the guest's own span.
    let spans = receiver.trace(&standard, 5).await;
    let slow = record(&logs, "loaded from the slow path");
    assert_eq!(slow.record.severity_text, "WARN");
    assert_eq!(slow.string("plugin.name"), Some("otel_guest"));
    assert_eq!(
        find(&slow.record.attributes, "app.rows"),
        Some(&OtlpValue::IntValue(3))
    );
    assert_eq!(
        slow.ids(),
        (standard.clone(), named(&spans, "load").span_id.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_lines_are_otlp_log_records_over_http() {
    log_records("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_lines_are_otlp_log_records_over_grpc() {
    log_records("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lines_exports_what_the_call_may_log_and_none_when_logs_are_off() {
    let receiver = Receiver::start().await;
    let mut comb = start(&receiver, "http/protobuf", &[]);
    let flood = call(&comb, "/misbehave/log?lines=400").await;
    assert!(comb.stop(), "{}", comb.log());
    // Shut down, so every admitted record has been flushed: exactly the
    // lines kept on the span.
    let of_flood = receiver
        .logs()
        .into_iter()
        .filter(|log| log.ids().0 == flood)
        .count();
    assert_eq!(of_flood, 256, "the per-call line limit");

    let receiver = Receiver::start().await;
    let mut comb = start(
        &receiver,
        "http/protobuf",
        &[("OTEL_LOGS_EXPORTER", "none")],
    );
    let printed = call(&comb, "/misbehave/print").await;
    receiver.trace(&printed, 4).await;
    assert!(comb.stop(), "{}", comb.log());
    assert!(receiver.logs().is_empty(), "{:#?}", receiver.logs());
    assert!(
        comb.log().contains("logs: OTEL_LOGS_EXPORTER=none"),
        "{}",
        comb.log()
    );
}
