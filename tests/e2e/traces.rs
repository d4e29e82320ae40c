//! What comb exports: the span tree of a request, read back from a real
//! OTLP receiver over both transports.

use std::time::Duration;

use opentelemetry_proto::tonic::{common::v1::any_value::Value, trace::v1::span::SpanKind};
use sha2::{Digest, Sha256};

use crate::{
    harness::{
        Comb, Options, client, eventually, get_json, get_response, plugins, silent_listener,
        trace_id,
    },
    otlp::{ReceivedSpan, Receiver, TlsIdentity, find, named},
};

/// OTel's status codes in OTLP.
const STATUS_UNSET: i32 = 0;
const STATUS_ERROR: i32 = 2;

/// Settings every traced test uses: a short batch delay so spans arrive
/// quickly, and the seed's service name and Honeycomb-style header.
fn traced_env<'a>(endpoint: &'a str, protocol: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=test-key"),
        ("OTEL_SERVICE_NAME", "backend-flask"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,service.name=overridden",
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// comb serving home_activities with `env`.
fn home_comb(env: &[(&str, &str)]) -> Comb {
    Comb::start(Options {
        plugins: &["home_activities"],
        env,
        ..Default::default()
    })
}

/// A collector on loopback answering every trace export with `answer`;
/// its endpoint.
async fn collector_answering<A>(answer: A) -> String
where
    A: axum::response::IntoResponse + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move || std::future::ready(answer.clone())),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    endpoint
}

/// GETs `path` and returns status and the trace id from `traceresponse`.
async fn get_traced(comb: &Comb, path: &str, traceparent: Option<&str>) -> (u16, String) {
    let mut request = client().get(comb.at(path));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("GET");
    let trace = trace_id(&response);
    (response.status().as_u16(), trace)
}

fn digest(plugin: &str) -> String {
    hex_string(&Sha256::digest(
        std::fs::read(plugins().wasm(plugin)).unwrap(),
    ))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the three-span tree of a home_activities request and returns
/// (server, invocation, guest).
fn assert_home_tree(
    spans: &[ReceivedSpan],
    coldstart: bool,
) -> (ReceivedSpan, ReceivedSpan, ReceivedSpan) {
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let server = named(spans, "GET /api/activities/home").clone();
    let invocation = named(spans, "invoke home_activities").clone();
    let guest = named(spans, "home-activites-mock-data").clone();

    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(invocation.kind, SpanKind::Internal);
    assert_eq!(guest.kind, SpanKind::Internal);
    assert_eq!(invocation.parent_span_id, server.span_id);
    assert_eq!(guest.parent_span_id, invocation.span_id);

    assert_eq!(server.string("http.request.method"), "GET");
    assert_eq!(server.string("http.route"), "/api/activities/home");
    assert_eq!(server.string("url.path"), "/api/activities/home");
    assert_eq!(server.string("url.scheme"), "http");
    assert_eq!(server.string("server.address"), "127.0.0.1");
    assert_eq!(server.string("client.address"), "127.0.0.1");
    assert_eq!(server.string("network.protocol.version"), "1.1");
    assert_eq!(server.int("http.response.status_code"), 200);
    assert_eq!(server.status_code, STATUS_UNSET);

    for span in [&server, &invocation, &guest] {
        assert_eq!(span.string("plugin.name"), "home_activities", "{span:#?}");
        assert_eq!(
            span.resource_string("service.name"),
            Some("backend-flask"),
            "OTEL_SERVICE_NAME wins"
        );
        assert_eq!(span.resource_string("deployment.environment"), Some("e2e"));
    }
    assert_eq!(invocation.string("plugin.version"), "0.1.0");
    assert_eq!(
        invocation.string("plugin.digest"),
        digest("home_activities")
    );
    assert_eq!(invocation.string("faas.trigger"), "http");
    assert_eq!(invocation.bool("faas.coldstart"), coldstart);
    assert!(invocation.double("plugin.instantiate_ms") > 0.0);
    assert!(invocation.double("plugin.call_ms") > 0.0);

    let now = guest.string("app.now");
    let parsed = chrono::DateTime::parse_from_rfc3339(now)
        .unwrap_or_else(|e| panic!("app.now {now:?}: {e}"));
    assert!(
        (chrono::Utc::now() - parsed.to_utc()).num_seconds().abs() < 120,
        "app.now {now} is not now"
    );
    assert_eq!(guest.int("app.result_length"), 3);
    assert_eq!(
        guest.scope, "home_activities",
        "guest spans carry the plugin's tracer scope"
    );
    (server, invocation, guest)
}

async fn home_request_is_one_trace(protocol: &str) {
    let receiver = Receiver::start().await;
    let endpoint = if protocol == "grpc" {
        receiver.grpc_url.clone()
    } else {
        receiver.http_url.clone()
    };
    let env = traced_env(&endpoint, protocol);
    let comb = home_comb(&env);

    let (status, trace) = get_traced(&comb, "/api/activities/home", None).await;
    assert_eq!(status, 200);
    let (server, ..) = assert_home_tree(&receiver.trace(&trace, 3).await, true);
    assert_eq!(
        server.parent_span_id, "",
        "without traceparent the server span is the root"
    );

    let (_, second) = get_traced(&comb, "/api/activities/home", None).await;
    assert_ne!(second, trace, "each request is its own trace");
    assert_home_tree(&receiver.trace(&second, 3).await, false);

    let export = receiver.exports().into_iter().next().unwrap();
    assert_eq!(
        export.transport,
        if protocol == "grpc" { "grpc" } else { "http" }
    );
    assert!(
        export
            .headers
            .iter()
            .any(|(k, v)| k == "x-honeycomb-team" && v == "test-key"),
        "OTEL_EXPORTER_OTLP_HEADERS did not reach the receiver: {:?}",
        export.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_request_is_one_trace_over_http_protobuf() {
    home_request_is_one_trace("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_request_is_one_trace_over_grpc() {
    home_request_is_one_trace("grpc").await;
}

/// Starts comb with `env`, makes one home_activities request and checks
/// its whole trace arrived at `receiver`.
async fn one_traced_home_request(receiver: &Receiver, env: &[(&str, &str)]) {
    let comb = home_comb(env);
    let (status, trace) = get_traced(&comb, "/api/activities/home", None).await;
    assert_eq!(status, 200);
    assert_home_tree(&receiver.trace(&trace, 3).await, true);
}

/// With `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`, exports arrive gzipped (the
/// receiver decodes them) and whole.
async fn gzipped_exports_arrive_whole(protocol: &str) {
    let receiver = Receiver::start().await;
    let endpoint = match protocol {
        "grpc" => receiver.grpc_url.clone(),
        _ => receiver.http_url.clone(),
    };
    let mut env = traced_env(&endpoint, protocol);
    env.push(("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"));
    one_traced_home_request(&receiver, &env).await;
    let export = receiver.exports().into_iter().next().unwrap();
    let encoding = if protocol == "grpc" {
        "grpc-encoding"
    } else {
        "content-encoding"
    };
    assert!(
        export
            .headers
            .iter()
            .any(|(k, v)| k == encoding && v == "gzip"),
        "not gzipped: {:?}",
        export.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_exports_arrive_whole_over_http_protobuf() {
    gzipped_exports_arrive_whole("http/protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_exports_arrive_whole_over_grpc() {
    gzipped_exports_arrive_whole("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_traceparent_continues_the_callers_trace() {
    let receiver = Receiver::start().await;
    let env = traced_env(&receiver.http_url, "http/protobuf");
    let comb = home_comb(&env);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let (status, answered) = get_traced(
        &comb,
        "/api/activities/home",
        Some(&format!("00-{trace}-{parent}-01")),
    )
    .await;
    assert_eq!((status, answered.as_str()), (200, trace));
    let spans = receiver.trace(trace, 3).await;
    let (server, ..) = assert_home_tree(&spans, true);
    assert_eq!(server.parent_span_id, parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_wrong_method_are_traced_without_error_status() {
    let receiver = Receiver::start().await;
    let env = traced_env(&receiver.http_url, "http/protobuf");
    let comb = home_comb(&env);

    let (status, trace) = get_traced(&comb, "/api/nothing", None).await;
    assert_eq!(status, 404);
    let spans = receiver.trace(&trace, 1).await;
    let server = named(&spans, "GET");
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.int("http.response.status_code"), 404);
    assert_eq!(server.status_code, STATUS_UNSET);
    assert!(server.attribute("http.route").is_none(), "no route matched");

    let response = client()
        .delete(comb.at("/api/activities/home"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let trace = trace_id(&response);
    let spans = receiver.trace(&trace, 1).await;
    assert_eq!(spans.len(), 1, "no plugin ran: {spans:#?}");
    let server = named(&spans, "DELETE /api/activities/home");
    assert_eq!(server.int("http.response.status_code"), 405);
    assert_eq!(server.status_code, STATUS_UNSET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_marks_the_spans_as_errors_with_an_exception_event() {
    let receiver = Receiver::start().await;
    let env = traced_env(&receiver.http_url, "http/protobuf");
    let comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        env: &env,
        ..Default::default()
    });

    for (path, error_type, message) in [
        (
            "/faulty/unreachable",
            "wasm.trap.unreachable_code_reached",
            "unreachable",
        ),
        (
            "/faulty/panic",
            "wasm.panic",
            "faulty plugin panicked on purpose",
        ),
    ] {
        let (status, trace) = get_traced(&comb, path, None).await;
        assert_eq!(status, 500);
        let spans = receiver.trace(&trace, 3).await;
        let server = named(&spans, &format!("GET {path}"));
        let invocation = named(&spans, "invoke faulty");
        let guest = named(&spans, "faulty-work");
        assert_eq!(guest.parent_span_id, invocation.span_id);
        assert_eq!(guest.string("plugin.name"), "faulty");

        assert_eq!(invocation.status_code, STATUS_ERROR);
        assert!(
            invocation.status_message.contains(message),
            "{}",
            invocation.status_message
        );
        assert_eq!(invocation.string("error.type"), error_type);
        let exception = invocation.event("exception").expect("an exception event");
        let Some(Value::StringValue(text)) = find(exception, "exception.message") else {
            panic!("exception.message missing: {exception:?}")
        };
        assert!(text.contains(message), "{text}");
        let Some(Value::StringValue(stack)) = find(exception, "exception.stacktrace") else {
            panic!("exception.stacktrace missing: {exception:?}")
        };
        assert!(
            stack.contains("faulty.wasm!"),
            "a wasm backtrace naming the module: {stack}"
        );

        assert_eq!(server.status_code, STATUS_ERROR);
        assert_eq!(server.int("http.response.status_code"), 500);
        assert_eq!(server.string("error.type"), error_type);
    }

    // The host is fine: the next calls to both plugins succeed and trace.
    let (status, trace) = get_traced(&comb, "/faulty/ok", None).await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 3).await;
    assert_eq!(named(&spans, "invoke faulty").status_code, STATUS_UNSET);
    let (status, trace) = get_traced(&comb, "/api/activities/home", None).await;
    assert_eq!(status, 200);
    assert_home_tree(&receiver.trace(&trace, 3).await, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_pending_spans() {
    let receiver = Receiver::start().await;
    let mut env = traced_env(&receiver.http_url, "http/protobuf");
    // A batch delay far longer than the test: only the shutdown flush can
    // deliver these spans.
    env.retain(|(key, _)| *key != "OTEL_BSP_SCHEDULE_DELAY");
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "600000"));
    let mut comb = home_comb(&env);
    let (status, trace) = get_traced(&comb, "/api/activities/home", None).await;
    assert_eq!(status, 200);
    // Not a wait for something: a window in which a wrong early export
    // would show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "spans arrived before shutdown");
    assert!(
        comb.stop(),
        "comb exits cleanly on SIGTERM:\n{}",
        comb.log()
    );
    assert_home_tree(&receiver.trace(&trace, 3).await, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported() {
    // Listen where an OTel SDK exports by default (localhost:4318), when
    // that port is free, to catch any export attempt.
    let default_receiver = Receiver::start_on("127.0.0.1:4318").await.ok();
    let mut comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    for _ in 0..3 {
        assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    }
    assert!(comb.stop(), "comb exits cleanly on SIGTERM");
    let log = comb.log();
    assert_eq!(
        log.matches("exporting nothing").count(),
        1,
        "said once at start:\n{log}"
    );
    assert!(
        !log.contains("opentelemetry") && !log.contains("export failed"),
        "nothing logged of exports (no export attempt, no error):\n{log}"
    );
    match default_receiver {
        Some(receiver) => assert!(
            receiver.exports().is_empty(),
            "comb exported to the default endpoint"
        ),
        None => eprintln!("port 4318 busy; checked the log only"),
    }
}

/// Exports over TLS, http/protobuf and gRPC, to a receiver whose
/// self-signed certificate comb trusts through the variable `trust`.
async fn exports_over_tls_trusting_through(trust: &str) {
    let identity = TlsIdentity::self_signed();
    let receiver = Receiver::start_tls(&identity).await;
    let ca_file = identity.ca_file.path().to_str().unwrap().to_owned();
    for (protocol, endpoint) in [
        ("http/protobuf", &receiver.http_url),
        ("grpc", &receiver.grpc_url),
    ] {
        let mut env = traced_env(endpoint, protocol);
        env.push((trust, &ca_file));
        one_traced_home_request(&receiver, &env).await;
    }
    let transports: Vec<&str> = receiver.exports().iter().map(|e| e.transport).collect();
    assert!(
        transports.contains(&"http") && transports.contains(&"grpc"),
        "{transports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_with_the_system_roots_like_honeycomb() {
    // The test's certificate stands in for the system's CA roots.
    exports_over_tls_trusting_through("SSL_CERT_FILE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_to_a_collector_with_its_own_ca() {
    exports_over_tls_trusting_through("OTEL_EXPORTER_OTLP_CERTIFICATE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_disabled_records_and_exports_nothing() {
    let receiver = Receiver::start().await;
    let mut env = traced_env(&receiver.http_url, "http/protobuf");
    env.push(("OTEL_SDK_DISABLED", "true"));
    let mut comb = home_comb(&env);
    let response = get_response(comb.at("/api/activities/home")).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("traceresponse").is_none(),
        "no trace, no traceresponse"
    );
    // comb's page is served and says why it shows nothing.
    let (status, stats) =
        crate::harness::get_json(&format!("{}/_comb/api/stats?window=60", comb.admin_url)).await;
    assert_eq!(status, 200);
    assert_eq!(stats["recording"], false, "{stats}");
    assert!(comb.stop());
    assert!(receiver.exports().is_empty());
    assert!(comb.log().contains("traces: off"), "{}", comb.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_requests_nothing_and_is_logged() {
    // A loopback port nobody listens on: every export is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = traced_env(&endpoint, "http/protobuf");
    let mut comb = home_comb(&env);
    for _ in 0..20 {
        assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    }
    eventually("the exporter's failure is logged", &comb, || async {
        comb.log().contains("span export failed")
    })
    .await;
    let log = comb.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("span export failed")),
        "the failed export is logged as a warning:\n{log}"
    );
    // Where it went and why it failed, not only that it did.
    assert!(
        log.contains(&format!("OTLP export to {endpoint}/v1/traces failed"))
            && log.contains("Connection refused"),
        "the failed export names the collector and the cause:\n{log}"
    );
    assert_eq!(
        get_traced(&comb, "/api/activities/home", None).await.0,
        200,
        "still serving"
    );
    assert!(
        comb.stop(),
        "shutdown does not hang on a dead collector:\n{}",
        comb.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_refusing_exports_is_logged_with_its_answer() {
    // A collector that answers every export with 400 and a reason.
    let endpoint = collector_answering((
        axum::http::StatusCode::BAD_REQUEST,
        "spans rejected: dataset unknown",
    ))
    .await;
    let env = traced_env(&endpoint, "http/protobuf");
    let comb = home_comb(&env);
    assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    eventually(
        "the refusal is logged with the collector's answer",
        &comb,
        || async {
            comb.log()
                .contains("HTTP 400 Bad Request: spans rejected: dataset unknown")
        },
    )
    .await;
    assert_eq!(
        get_traced(&comb, "/api/activities/home", None).await.0,
        200,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collectors_partial_success_is_logged() {
    // A collector that takes the export but reports spans it rejected.
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message as _;
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "spans too old".into(),
        }),
    }
    .encode_to_vec();
    let endpoint =
        collector_answering(([("content-type", "application/x-protobuf")], answer)).await;
    let env = traced_env(&endpoint, "http/protobuf");
    let comb = home_comb(&env);
    assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    eventually("the rejected spans are logged", &comb, || async {
        let log = comb.log();
        log.contains("the OTLP collector rejected part of an export")
            && log.contains("rejected_spans=2")
            && log.contains("spans too old")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_trace_is_on_combs_page_too() {
    // The page and the exporter share one span processor: each gets
    // every span of the trace.
    let receiver = Receiver::start().await;
    let env = traced_env(&receiver.http_url, "http/protobuf");
    let comb = home_comb(&env);
    let (status, trace) = get_traced(&comb, "/api/activities/home", None).await;
    assert_eq!(status, 200);
    assert_home_tree(&receiver.trace(&trace, 3).await, true);
    let url = format!("{}/_comb/api/traces/{trace}", comb.admin_url);
    let page = eventually("the page has the trace", &comb, || async {
        let (status, body) = get_json(&url).await;
        (status == 200).then_some(body)
    })
    .await;
    let mut names: Vec<_> = page["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|span| span["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "GET /api/activities/home",
            "home-activites-mock-data",
            "invoke home_activities"
        ],
        "{page:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_batch_flag_caps_each_export_request() {
    let receiver = Receiver::start().await;
    let env = traced_env(&receiver.http_url, "http/protobuf");
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &env,
        args: &["--otel-bsp-max-export-batch-size=4"],
        ..Default::default()
    });
    for _ in 0..10 {
        assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    }
    eventually("all 30 spans arrive", &comb, || async {
        receiver.spans().len() >= 30
    })
    .await;
    let sizes: Vec<usize> = receiver
        .exports()
        .iter()
        .map(|export| {
            let spans = export.request.resource_spans.iter();
            spans
                .flat_map(|resource| &resource.scope_spans)
                .map(|scope| scope.spans.len())
                .sum()
        })
        .collect();
    assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_at_shutdown_is_given_up_cleanly() {
    // A collector that accepts and never answers: every export waits out
    // its timeout, so shutdown's flush fails (its exports time out, or it
    // gives up after 5 s with exports still queued), comb says so, and
    // must exit without them panicking.
    let endpoint = format!("http://{}", silent_listener().await);
    let mut env = traced_env(&endpoint, "http/protobuf");
    env.extend([
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        // Small batches: many exports are queued when shutdown starts.
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
    ]);
    let mut comb = home_comb(&env);
    for _ in 0..30 {
        assert_eq!(get_traced(&comb, "/api/activities/home", None).await.0, 200);
    }
    assert!(comb.stop(), "comb exits:\n{}", comb.log());
    let log = comb.log();
    assert!(log.contains("flushing spans at shutdown"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
