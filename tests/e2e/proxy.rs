//! Standard `wasi:http/proxy` components served unmodified, beside comb's
//! own plugins: routed under their file name, traced like any plugin.

use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;

use crate::{
    harness::{Comb, Options, client, get_json, trace_id},
    otlp::{Receiver, find, named},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_component_serves_every_method_under_its_name_and_is_traced() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["proxy_hello", "home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    // A header value that is not UTF-8 (Latin-1 "café") is legal HTTP; a
    // proxy gets its bytes, and its own answer goes back untouched.
    let latin1 = b"caf\xe9";
    let response = client()
        .post(comb.at("/proxy_hello/a/b?x=1"))
        .header(
            "x-echo",
            reqwest::header::HeaderValue::from_bytes(latin1).unwrap(),
        )
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-proxy"], "hello");
    assert_eq!(response.headers()["x-echo"].as_bytes(), latin1);
    let trace = trace_id(&response);
    let body = response.text().await.unwrap();
    let seen: Vec<&str> = body.lines().collect();
    assert_eq!(seen[0], "method=POST", "{body}");
    assert_eq!(seen[1], "path=/proxy_hello/a/b?x=1", "{body}");
    assert_eq!(seen[3], "body=3", "{body}");
    // Other methods and the bare prefix reach it too; comb's plugins still serve.
    for (method, path) in [("GET", "/proxy_hello"), ("DELETE", "/proxy_hello/x")] {
        let response = client()
            .request(method.parse().unwrap(), comb.at(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{method} {path}");
    }
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);

    // server span → invocation span, the guest's stdout on it, and the
    // guest saw the invocation span as its parent.
    let spans = receiver.trace(&trace, 2).await;
    let server = named(&spans, "POST /proxy_hello/...");
    let invocation = named(&spans, "invoke proxy_hello");
    assert_eq!(invocation.parent_span_id, server.span_id);
    assert_eq!(invocation.string("plugin.name"), "proxy_hello");
    assert_eq!(server.string("http.route"), "/proxy_hello/...");
    let traceparent = seen[2].strip_prefix("traceparent=").unwrap();
    assert_eq!(
        traceparent,
        format!("00-{trace}-{}-01", invocation.span_id),
        "the guest's parent is the invocation span"
    );
    let logged = invocation.events.iter().any(|(name, attributes)| {
        name == "log"
            && find(attributes, "log.message")
                == Some(&OtlpValue::StringValue(
                    "proxy_hello handled POST /proxy_hello/a/b?x=1".into(),
                ))
    });
    assert!(logged, "{invocation:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_routes_a_proxy_component_elsewhere() {
    let comb = Comb::start(Options {
        plugins: &["proxy_hello"],
        files: &[(
            "proxy_hello.toml",
            b"routes = [{ method = \"GET\", pattern = \"/hello/...\" }]\n",
        )],
        ..Options::default()
    });
    let response = client().get(comb.at("/hello/there")).send().await.unwrap();
    assert_eq!(response.status(), 201);
    assert!(response.text().await.unwrap().contains("path=/hello/there"));
    let response = client()
        .get(comb.at("/proxy_hello/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = client().post(comb.at("/hello/there")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_component_is_refused_instance_reuse() {
    // Reuse is for comb plugins, whose calls comb frames one by one; a
    // proxy asking for it is rejected with the reason, not served.
    let comb = Comb::start(Options {
        plugins: &["proxy_hello"],
        files: &[(
            "proxy_hello.toml",
            b"[limits]\nmax_instance_reuse_count = 2\n",
        )],
        ..Options::default()
    });
    let response = client()
        .get(comb.at("/proxy_hello/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let report = crate::lifecycle::report(&comb, "proxy_hello.wasm")
        .await
        .unwrap();
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("max_instance_reuse_count is for comb plugins"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_or_panicking_proxy_ends_that_call_only() {
    let comb = Comb::start(Options {
        plugins: &["proxy_hello"],
        files: &[("proxy_hello.toml", b"[limits]\ndeadline_ms = 300\n")],
        ..Options::default()
    });
    let (status, body) = get_json(&comb.at("/proxy_hello/loop")).await;
    assert_eq!(status, 504, "{body}");
    let (status, body) = get_json(&comb.at("/proxy_hello/panic")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.to_string().contains("proxy_hello was asked to panic"),
        "{body}"
    );
    let response = client()
        .get(comb.at("/proxy_hello/fine"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}
