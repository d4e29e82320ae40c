//! Standard `wasi:http` components served unmodified, beside comb's own
//! plugins — WASI 0.2 `wasi:http/proxy` and WASI 0.3 `wasi:http/service`:
//! routed under their file name, traced and bounded like any plugin.

use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;

use crate::{
    harness::{Comb, Options, client, get_json, get_response, trace_id},
    otlp::{Receiver, find, named},
};

/// The standard components under test, one per WASI version, twins that
/// answer alike: `proxy_hello` (0.2 `wasi:http/proxy`) and `service_hello`
/// (0.3 `wasi:http/service`, its body written by a task after it returns).
const STANDARD: [&str; 2] = ["proxy_hello", "service_hello"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_components_serve_every_method_under_their_name_and_are_traced() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["proxy_hello", "service_hello", "home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    for name in STANDARD {
        // A header value that is not UTF-8 (Latin-1 "café") is legal HTTP; a
        // component gets its bytes, and its own answer goes back untouched.
        let latin1 = b"caf\xe9";
        let response = client()
            .post(comb.at(&format!("/{name}/a/b?x=1")))
            .header(
                "x-echo",
                reqwest::header::HeaderValue::from_bytes(latin1).unwrap(),
            )
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{name}");
        assert_eq!(response.headers()["x-proxy"], "hello", "{name}");
        assert_eq!(response.headers()["x-echo"].as_bytes(), latin1, "{name}");
        let trace = trace_id(&response);
        let body = response.text().await.unwrap();
        let seen: Vec<&str> = body.lines().collect();
        assert_eq!(seen[0], "method=POST", "{name}: {body}");
        assert_eq!(seen[1], format!("path=/{name}/a/b?x=1"), "{name}: {body}");
        assert_eq!(seen[3], "body=3", "{name}: {body}");
        // Other methods and the bare prefix reach it too.
        for (method, path) in [
            ("GET", format!("/{name}")),
            ("DELETE", format!("/{name}/x")),
        ] {
            let response = client()
                .request(method.parse().unwrap(), comb.at(&path))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "{method} {path}");
        }

        // server span → invocation span, the guest's stdout on it, and the
        // guest saw the invocation span as its parent.
        let spans = receiver.trace(&trace, 2).await;
        let server = named(&spans, &format!("POST /{name}/..."));
        let invocation = named(&spans, &format!("invoke {name}"));
        assert_eq!(invocation.parent_span_id, server.span_id);
        assert_eq!(invocation.string("plugin.name"), name);
        assert_eq!(server.string("http.route"), format!("/{name}/..."));
        let traceparent = seen[2].strip_prefix("traceparent=").unwrap();
        assert_eq!(
            traceparent,
            format!("00-{trace}-{}-01", invocation.span_id),
            "{name}: the guest's parent is the invocation span"
        );
        let line = format!("{name} handled POST /{name}/a/b?x=1");
        let logged = invocation.events.iter().any(|(event, attributes)| {
            event == "log"
                && find(attributes, "log.message") == Some(&OtlpValue::StringValue(line.clone()))
        });
        assert!(logged, "{invocation:#?}");
    }
    // comb's own plugins still serve beside them.
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
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
    let response = get_response(comb.at("/hello/there")).await;
    assert_eq!(response.status(), 201);
    assert!(response.text().await.unwrap().contains("path=/hello/there"));
    let response = get_response(comb.at("/proxy_hello/x")).await;
    assert_eq!(response.status(), 404);
    let response = client().post(comb.at("/hello/there")).send().await.unwrap();
    assert_eq!(response.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_3_service_may_reuse_its_instance_and_a_0_2_proxy_may_not() {
    // A 0.3 service's handler is called per request, so an instance may
    // serve several, one at a time, as `wasmtime serve` allows; a 0.2
    // proxy's instance serves one request, and asking is refused with the
    // reason.
    let receiver = Receiver::start().await;
    let reuse = b"[limits]\nmax_instance_reuse_count = 2\n";
    let comb = Comb::start(Options {
        plugins: &STANDARD,
        files: &[("proxy_hello.toml", reuse), ("service_hello.toml", reuse)],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Options::default()
    });
    let response = get_response(comb.at("/proxy_hello/x")).await;
    assert_eq!(response.status(), 404);
    let report = crate::lifecycle::report(&comb, "proxy_hello.wasm")
        .await
        .unwrap();
    assert_eq!(report["state"], "failed", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("a wasi:http 0.2 proxy component gets a fresh instance per request"),
        "{report}"
    );

    // One call after another: the second runs on the first's instance, the
    // third on a fresh one (two calls each), every one whole and traced.
    let mut calls = Vec::new();
    for n in 0..3 {
        let response = client()
            .post(comb.at(&format!("/service_hello/call/{n}")))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let trace = trace_id(&response);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains(&format!("path=/service_hello/call/{n}"))
        );
        let spans = receiver.trace(&trace, 2).await;
        calls.push(named(&spans, "invoke service_hello").int("plugin.instance.call"));
    }
    assert_eq!(calls, [1, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_or_panicking_standard_component_ends_that_call_only() {
    // Each component twice: a copy under a 300 ms deadline (`NAME_short`)
    // meets it looping; the original, at the default deadline, panics and
    // then serves, with room no busy machine uses up (a 300 ms deadline made
    // its next call flaky). A third copy stalls its body (see below).
    let built = crate::harness::plugins();
    let short: Vec<(String, Vec<u8>)> = STANDARD
        .iter()
        .flat_map(|name| {
            let wasm = std::fs::read(built.wasm(name)).unwrap();
            [
                (format!("{name}_short.wasm"), wasm),
                (
                    format!("{name}_short.toml"),
                    b"[limits]\ndeadline_ms = 300\n".to_vec(),
                ),
            ]
        })
        .chain(stalling_service(built))
        .collect();
    let files: Vec<(&str, &[u8])> = short.iter().map(|(f, b)| (f.as_str(), &b[..])).collect();
    let comb = Comb::start(Options {
        plugins: &STANDARD,
        files: &files,
        ..Options::default()
    });
    for name in STANDARD {
        let (status, body) = get_json(&comb.at(&format!("/{name}_short/loop"))).await;
        assert_eq!(status, 504, "{name}: {body}");
        let (status, body) = get_json(&comb.at(&format!("/{name}/panic"))).await;
        assert_eq!(status, 500, "{name}: {body}");
        // A trap in the handler, not a failure to instantiate.
        assert_eq!(body["error"]["code"], "plugin_trapped", "{name}: {body}");
        assert!(
            body.to_string()
                .contains(&format!("{name} was asked to panic")),
            "{body}"
        );
        let response = get_response(comb.at(&format!("/{name}/fine"))).await;
        assert_eq!(response.status(), 201, "{name}");
    }
    // A host call that fails inside the handler is the call's failure too,
    // not a failure to instantiate.
    let (status, body) = get_json(&comb.at("/proxy_hello/orphan")).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "plugin_trapped", "{body}");
    // A WASI 0.3 body is written by the guest's own task after the
    // response: one that never ends is cut off at the deadline.
    let (status, body) = get_json(&comb.at("/service_hello_stall/stall")).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.to_string()
            .contains("the response body did not end by the deadline"),
        "{body}"
    );
}

/// `service_hello` as `service_hello_stall`, with a deadline long enough
/// that its response head comes before it however busy the machine (300 ms
/// was not, behind a build: the call then ended as a 504 before its body
/// could stall), yet short enough for a test to wait out.
fn stalling_service(built: &xtask::BuiltPlugins) -> [(String, Vec<u8>); 2] {
    let wasm = std::fs::read(built.wasm("service_hello")).unwrap();
    [
        ("service_hello_stall.wasm".into(), wasm),
        (
            "service_hello_stall.toml".into(),
            b"[limits]\ndeadline_ms = 3000\n".to_vec(),
        ),
    ]
}
