//! Outgoing HTTP from plugins (wasi:http): each call a CLIENT span in the
//! request's trace, the trace context in its headers, destinations only as
//! the sidecar grants them.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, http::HeaderMap, routing::get};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    harness::{Comb, Options, get_json, get_response, trace_id},
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
    let response =
        crate::harness::get_response(fetch(&comb, &comb.at("/api/activities/home"))).await;
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
    let response =
        crate::harness::get_response(fetch(&comb, &format!("{}/hello", upstream.url))).await;
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

/// A loopback server too slow for comb's timeouts: it reads the request,
/// writes `head` (nothing when empty), then, when `trickle`, one chunked
/// body byte every 100 ms; each connection ends by itself after 10 s.
async fn slow_server(head: &'static str, trickle: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(10);
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(head.as_bytes()).await;
                while trickle && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep_until(until.into()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_slow_calls_end_at_the_plugins_timeouts_as_failed_client_spans() {
    let receiver = Receiver::start().await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let stalled = slow_server("", false).await;
    let trickling = slow_server(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        true,
    )
    .await;
    let comb = Comb::start(Options {
        plugins: &["caller"],
        files: &[(
            "caller.toml",
            b"[sandbox]\nhttp = [\"127.0.0.1\"]\n\n[limits]\n\
              http_first_byte_timeout_ms = 300\nhttp_timeout_ms = 1000\n",
        )],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });

    // (server, the guest's error, the CLIENT span's error.type, the least
    // time the call may take): the trickling server answers in time, so
    // its span has a status code; its body outlasts the total timeout.
    let cases = [
        (refused, "ConnectionRefused", Some("ConnectionRefused"), 0),
        (
            stalled,
            "ConnectionReadTimeout",
            Some("ConnectionReadTimeout"),
            300,
        ),
        (trickling, "HTTP response timeout", None, 1000),
    ];
    for (server, guest_error, error_type, at_least_ms) in cases {
        let started = Instant::now();
        let response = get_response(fetch(&comb, &format!("{server}/slow"))).await;
        let elapsed = started.elapsed();
        let trace = trace_id(&response);
        assert_eq!(response.status(), 502, "{server}");
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(guest_error), "{server}: {error}");
        // Ended by comb's timeout, not by the server giving up after 10 s.
        assert!(
            elapsed >= Duration::from_millis(at_least_ms) && elapsed < Duration::from_secs(8),
            "{server}: {elapsed:?}"
        );

        let spans = receiver.trace(&trace, 4).await;
        let span = named(&spans, "GET");
        match error_type {
            Some(error_type) => {
                assert_eq!(span.string("error.type"), error_type, "{span:#?}");
                assert_eq!(span.status_code, 2, "{span:#?}");
            }
            None => assert_eq!(span.int("http.response.status_code"), 200),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_0_3_component_calls_out_as_a_client_span_within_its_sandbox() {
    // WASI 0.3's `wasi:http/client` goes through the same hooks as 0.2's
    // outgoing handler: the same CLIENT span, propagation and grants.
    let receiver = Receiver::start().await;
    let upstream = Upstream::start().await;
    let comb = Comb::start(Options {
        plugins: &["service_hello"],
        files: &[("service_hello.toml", b"[sandbox]\nhttp = [\"127.0.0.1\"]\n")],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let port = upstream.url.rsplit(':').next().unwrap();
    let fetch = |host: &str| comb.at(&format!("/service_hello/fetch/{host}:{port}/hello"));

    let response = get_response(fetch("127.0.0.1")).await;
    assert_eq!(response.status(), 200);
    let trace = trace_id(&response);
    let body = response.text().await.unwrap();
    assert_eq!(body, "status=200\nbody=hello from upstream");
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke service_hello");
    let call = named(&spans, "GET");
    assert_eq!(call.kind, SpanKind::Client);
    assert_eq!(call.parent_span_id, invocation.span_id);
    assert_eq!(call.string("url.full"), format!("{}/hello", upstream.url));
    assert_eq!(call.int("http.response.status_code"), 200);
    let traceparent = upstream.header("traceparent");
    assert_eq!(traceparent, format!("00-{trace}-{}-01", call.span_id));

    // `localhost` is not granted: denied before anything is sent.
    let sent = upstream.seen.lock().unwrap().len();
    let response = get_response(fetch("localhost")).await;
    assert_eq!(response.status(), 502);
    let trace = trace_id(&response);
    let body = response.text().await.unwrap();
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(
        upstream.seen.lock().unwrap().len(),
        sent,
        "nothing was sent"
    );
    let spans = receiver.trace(&trace, 3).await;
    let call = named(&spans, "GET");
    assert_eq!(call.string("error.type"), "http.request_denied");
    assert_eq!(call.status_code, 2);
}
