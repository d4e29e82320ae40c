//! Outgoing HTTP from plugins (wasi:http): each call a CLIENT span in the
//! request's trace, the trace context in its headers, destinations only as
//! the sidecar grants them.

use std::sync::{Arc, Mutex};

use axum::{Router, http::HeaderMap, routing::get};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::{
    harness::{Comb, Options, get_json},
    otlp::{Receiver, named},
};

/// A loopback HTTP server that answers `GET /hello` and keeps the headers
/// of every request it got.
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let keep = seen.clone();
        let app = Router::new().route(
            "/hello",
            get(move |headers: HeaderMap| async move {
                keep.lock().unwrap().push(headers);
                "hello from upstream"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { url, seen }
    }

    fn header(&self, name: &str) -> String {
        let seen = self.seen.lock().unwrap();
        let headers = seen.last().expect("upstream got a request");
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
            .to_str()
            .unwrap()
            .to_owned()
    }
}

/// The caller plugin, allowed to call anything on 127.0.0.1.
fn start(receiver: &Receiver, propagators: &str) -> Comb {
    Comb::start(Options {
        plugins: &["caller", "home_activities"],
        files: &[("caller.toml", b"[sandbox]\nhttp = [\"127.0.0.1\"]\n")],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_PROPAGATORS", propagators),
        ],
        ..Options::default()
    })
}

fn fetch(comb: &Comb, url: &str) -> String {
    comb.at(&format!(
        "/caller/fetch?url={}",
        url.replace(':', "%3A").replace('/', "%2F")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_is_a_client_span_whose_context_reaches_the_server() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let comb = start(&receiver, "tracecontext,baggage,xray");
    let target = format!("{}/hello", upstream.url);
    let (status, body) = get_json(&fetch(&comb, &target)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200);
    assert_eq!(body["body"], "hello from upstream");

    let traceparent = upstream.header("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    let (trace, parent) = (parts[1], parts[2]);
    let spans = receiver.trace(trace, 4).await;
    let guest = named(&spans, "fetch-upstream");
    let client = named(&spans, "GET");
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(
        client.span_id, parent,
        "the server's parent is the CLIENT span"
    );
    assert_eq!(
        client.parent_span_id, guest.span_id,
        "under the guest's span"
    );
    assert_eq!(client.string("url.full"), target);
    assert_eq!(client.string("server.address"), "127.0.0.1");
    assert_eq!(
        client.int("server.port"),
        upstream
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    );
    assert_eq!(client.int("http.response.status_code"), 200);
    assert_eq!(client.string("http.request.method"), "GET");

    // With X-Ray on, the call carries X-Ray's header for the same span.
    let xray = upstream.header("x-amzn-trace-id");
    assert!(
        xray.contains(&format!("Root=1-{}-{}", &trace[..8], &trace[8..]))
            && xray.contains(&format!("Parent={parent}")),
        "{xray}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_through_comb_are_one_trace() {
    let receiver = Receiver::start().await;
    let comb = start(&receiver, "tracecontext,baggage");
    let response = crate::harness::client()
        .get(fetch(&comb, &comb.at("/api/activities/home")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let trace = crate::harness::trace_id(&response);

    // caller's server, invoke, guest and client spans, then home's three.
    let spans = receiver.trace(&trace, 7).await;
    let client = named(&spans, "GET");
    let inner = named(&spans, "GET /api/activities/home");
    assert_eq!(inner.parent_span_id, client.span_id);
    assert_eq!(inner.kind, SpanKind::Server);
    named(&spans, "home-activites-mock-data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_the_sidecar_does_not_grant_is_denied() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let comb = Comb::start(Options {
        plugins: &["caller"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let response = crate::harness::client()
        .get(fetch(&comb, &format!("{}/hello", upstream.url)))
        .send()
        .await
        .unwrap();
    let trace = crate::harness::trace_id(&response);
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{body}"
    );
    assert!(upstream.seen.lock().unwrap().is_empty(), "nothing was sent");
    let spans = receiver.trace(&trace, 4).await;
    let client = named(&spans, "GET");
    assert_eq!(client.string("error.type"), "http.request_denied");
    assert_eq!(client.status_code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baggage_reaches_the_guest_and_travels_on() {
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let comb = start(&receiver, "tracecontext,baggage");
    let baggage = "user.id=alice,tier=gold";
    let response = crate::harness::client()
        .get(comb.at("/caller/baggage"))
        .header("baggage", baggage)
        .send()
        .await
        .unwrap();
    let seen: serde_json::Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"user.id": "alice", "tier": "gold"})
    );

    let response = crate::harness::client()
        .get(fetch(&comb, &format!("{}/hello", upstream.url)))
        .header("baggage", baggage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = upstream.header("baggage");
    assert!(
        forwarded.contains("user.id=alice") && forwarded.contains("tier=gold"),
        "{forwarded}"
    );
}
