//! Which trace an incoming request joins: `OTEL_PROPAGATORS` with W3C
//! Trace Context, AWS X-Ray's `X-Amzn-Trace-Id`, or none; and X-Ray-valid
//! trace ids for traces bound for X-Ray.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    harness::{Comb, Options, client, get_response, trace_id},
    otlp::Receiver,
};

const XRAY_HEADER: &str =
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const XRAY_TRACE: &str = "5759e988bd862e3fe1be46a994272793";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// GETs home_activities with `header` and returns the trace comb put it in.
async fn joined_trace(comb: &Comb, header: (&str, &str)) -> String {
    let response = client()
        .get(comb.at("/api/activities/home"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    trace_id(&response)
}

fn start(env: &[(&str, &str)]) -> Comb {
    Comb::start(Options {
        plugins: &["home_activities"],
        env,
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_xray_header_continues_its_trace() {
    let receiver = Receiver::start().await;
    let comb = start(&[
        ("OTEL_PROPAGATORS", "tracecontext,baggage,xray"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    assert_eq!(
        joined_trace(&comb, ("X-Amzn-Trace-Id", XRAY_HEADER)).await,
        XRAY_TRACE
    );
    let spans = receiver.trace(XRAY_TRACE, 3).await;
    let server = spans
        .iter()
        .find(|s| s.name == "GET /api/activities/home")
        .expect("the server span");
    assert_eq!(server.parent_span_id, "53995c3f42cd8ad8");
    // W3C Trace Context still works alongside.
    assert_eq!(
        joined_trace(&comb, ("traceparent", TRACEPARENT)).await,
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_xray_header_is_not_read() {
    let comb = start(&[]);
    let trace = joined_trace(&comb, ("X-Amzn-Trace-Id", XRAY_HEADER)).await;
    assert_ne!(trace, XRAY_TRACE);
    assert_eq!(
        joined_trace(&comb, ("traceparent", TRACEPARENT)).await,
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_propagators_start_a_new_trace_every_time() {
    let comb = start(&[("OTEL_PROPAGATORS", "none")]);
    let trace = joined_trace(&comb, ("traceparent", TRACEPARENT)).await;
    assert_ne!(trace, "0af7651916cd43dd8448eb211c80319c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_propagator_is_refused_at_start() {
    let output = std::process::Command::new(crate::harness::comb_binary())
        .args(["serve", "--plugins", ".", "--no-admin"])
        .env("OTEL_PROPAGATORS", "tracecontext,b3")
        .output()
        .expect("running comb");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("b3"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xray_trace_ids_begin_with_the_start_time() {
    let comb = start(&[("COMB_XRAY_TRACE_IDS", "true")]);
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let response = get_response(comb.at("/api/activities/home")).await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let trace = trace_id(&response);
    let seconds = u64::from_str_radix(&trace[..8], 16).unwrap();
    assert!(
        (before..=after).contains(&seconds),
        "{trace}: {seconds} not in {before}..={after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_xray_header_is_respected() {
    let receiver = Receiver::start().await;
    let comb = start(&[
        ("OTEL_PROPAGATORS", "xray"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let unsampled = "Root=1-5759e988-bd862e3fe1be46a994272794;Parent=53995c3f42cd8ad8;Sampled=0";
    let response = client()
        .get(comb.at("/api/activities/home"))
        .header("X-Amzn-Trace-Id", unsampled)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let traceresponse = response.headers()["traceresponse"].to_str().unwrap();
    assert_eq!(
        traceresponse.split('-').collect::<Vec<_>>()[1..],
        [
            "5759e988bd862e3fe1be46a994272794",
            &traceresponse[36..52],
            "00"
        ],
        "same trace, not sampled: {traceresponse}"
    );
    // A sampled request after it is exported; the unsampled one is not.
    assert_eq!(
        joined_trace(&comb, ("X-Amzn-Trace-Id", XRAY_HEADER)).await,
        XRAY_TRACE
    );
    receiver.trace(XRAY_TRACE, 3).await;
    let exported: Vec<String> = receiver.spans().into_iter().map(|s| s.trace_id).collect();
    assert!(
        !exported.contains(&"5759e988bd862e3fe1be46a994272794".to_owned()),
        "{exported:?}"
    );
}
