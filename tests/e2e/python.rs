//! Python plugins (componentize-py, comb's Python SDK, OpenTelemetry's own
//! Python API): the seed's `HomeActivities` code serves and traces as the
//! Rust plugin does; errors, limits and the API's corners hold too.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::Value as Json;

use crate::{
    harness::{Comb, Options, client, get_json, trace_id},
    otlp::{ReceivedSpan, Receiver, find, named},
};

const STATUS_ERROR: i32 = 2;

fn traced(receiver: &Receiver) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// GETs `path`: status, body, trace id.
async fn get(comb: &Comb, path: &str) -> (u16, Json, String) {
    let response = client().get(comb.at(path)).send().await.unwrap();
    let (status, trace) = (response.status().as_u16(), trace_id(&response));
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Json::Null);
    (status, body, trace)
}

/// `body` without the fields that hold the time of the request.
fn timeless(mut body: Json) -> Json {
    fn strip(value: &mut Json) {
        match value {
            Json::Object(fields) => {
                fields.retain(|key, _| !key.ends_with("_at"));
                fields.values_mut().for_each(strip);
            }
            Json::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

fn string<'a>(
    attributes: &'a [opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> &'a str {
    match find(attributes, key) {
        Some(Value::StringValue(text)) => text,
        other => panic!("{key}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_code_in_python_serves_and_traces_as_the_rust_plugin_does() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities", "home_activities_py"],
        env: &traced(&receiver),
        ..Default::default()
    });
    let (status, python, trace) = get(&comb, "/api/python/activities/home").await;
    assert_eq!(status, 200, "{python}");
    let (_, rust) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(
        timeless(python.clone()),
        timeless(rust),
        "the same activities, field by field"
    );
    // The times are the seed's: ISO 8601 with the offset, two days back.
    let created = python[0]["created_at"].as_str().unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
    let age = chrono::Utc::now() - created.to_utc();
    assert!(
        (age - chrono::Duration::days(2)).num_seconds().abs() < 120,
        "{age}"
    );

    let spans = receiver.trace(&trace, 3).await;
    let server = named(&spans, "GET /api/python/activities/home");
    let invocation = named(&spans, "invoke home_activities_py");
    let guest = named(&spans, "home-activites-mock-data");
    assert_eq!(invocation.parent_span_id, server.span_id);
    assert_eq!(guest.parent_span_id, invocation.span_id);
    for span in [server, invocation, guest] {
        assert_eq!(span.string("plugin.name"), "home_activities_py");
    }
    let now = chrono::DateTime::parse_from_rfc3339(guest.string("app.now")).unwrap();
    assert!((chrono::Utc::now() - now.to_utc()).num_seconds().abs() < 120);
    assert_eq!(guest.int("app.result_length"), 3);
    assert_eq!(guest.status_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exceptions_limits_requests_and_the_otel_api() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities", "misbehave_py"],
        env: &traced(&receiver),
        args: &["--deadline-ms", "2000"],
        ..Default::default()
    });

    // An exception: 500, its type and message on the invocation span.
    let (status, _, trace) = get(&comb, "/py/raise").await;
    assert_eq!(status, 500);
    let spans = receiver.trace(&trace, 2).await;
    let invocation = named(&spans, "invoke misbehave_py");
    assert_eq!(invocation.status_code, STATUS_ERROR);
    assert!(
        invocation
            .status_message
            .contains("ValueError: python plugin failed on purpose"),
        "{}",
        invocation.status_message
    );
    let exception = invocation.event("exception").expect("an exception event");
    assert_eq!(string(exception, "exception.type"), "ValueError");

    // The client's fault.
    let (status, body, _) = get(&comb, "/py/bad").await;
    assert_eq!(status, 400, "{body}");

    // The request as Python sees it, and the response it builds.
    let response = client()
        .post(comb.at("/py/echo/ada?x=1&y=2"))
        .header("x-test", "yes")
        .body(r#"{"n": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-echo"], "yes");
    let echoed: Json = response.json().await.unwrap();
    assert_eq!(
        echoed,
        serde_json::json!({"name": "ada", "query": {"x": "1", "y": "2"}, "header": "yes", "body": {"n": 3}})
    );
    let not_json = client()
        .post(comb.at("/py/echo/ada"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    // OpenTelemetry's API: nesting, attributes of each type, events,
    // record_exception, set_status, the invocation span as the current
    // one outside any `with`, and `logging` as an event.
    let (status, _, trace) = get(&comb, "/py/otel").await;
    assert_eq!(status, 200);
    let spans: Vec<ReceivedSpan> = receiver.trace(&trace, 4).await;
    let invocation = named(&spans, "invoke misbehave_py");
    let outer = named(&spans, "outer");
    let inner = named(&spans, "inner");
    assert_eq!(outer.parent_span_id, invocation.span_id);
    assert_eq!(inner.parent_span_id, outer.span_id);
    assert_eq!(invocation.string("app.where"), "invocation");
    assert_eq!(outer.int("app.level"), 1);
    assert!(outer.event("started").is_some());
    assert!(inner.bool("app.flag"));
    assert_eq!(inner.double("app.ratio"), 0.5);
    assert_eq!(inner.status_code, STATUS_ERROR);
    assert_eq!(inner.status_message, "lookup failed");
    let exception = inner.event("exception").expect("record_exception");
    assert_eq!(string(exception, "exception.type"), "KeyError");
    let logged = spans
        .iter()
        .flat_map(|span| &span.events)
        .find(|(_, attributes)| {
            find(attributes, "log.message")
                .is_some_and(|v| matches!(v, Value::StringValue(m) if m == "otel route done"))
        });
    assert!(
        logged.is_some(),
        "the logging record is an event: {spans:#?}"
    );

    // A loop meets the deadline, a hoard the memory limit; comb serves on.
    assert_eq!(get(&comb, "/py/spin").await.0, 504);
    assert_eq!(get(&comb, "/py/memory").await.0, 500);
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    assert_eq!(get(&comb, "/py/bad").await.0, 400);
}
