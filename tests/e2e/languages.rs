//! Python and JavaScript plugins (componentize-py and componentize-js,
//! comb's SDKs, OpenTelemetry's own API in each language): the seed's
//! `HomeActivities` code in Python and the notifications feed in
//! JavaScript serve and trace as the Rust plugins do; errors, limits,
//! requests and the API's corners hold alike in both.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::Value as Json;

use crate::{
    harness::{Comb, Options, client, get_json, get_response, trace_id},
    otlp::{ReceivedSpan, Receiver, find, named},
};

const STATUS_ERROR: i32 = 2;

/// The deadline of every call that is not meant to meet it: room that no
/// load on the machine uses up (a fresh CPython instance, demoted to a
/// nice-19 thread after 2 ms, took over 5 s while a parallel test
/// componentized on both cores), so no verdict depends on how busy the
/// machine is.
const ROOMY_DEADLINE_MS: &str = "60000";

/// The deadline of the one call that loops: it meets it whatever the load
/// (a loop never ends), so it can be short.
const SPIN_DEADLINE_MS: &str = "1000";

fn traced(receiver: &Receiver) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.http_url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// GETs `path`: status, body, trace id.
async fn get(comb: &Comb, path: &str) -> (u16, Json, String) {
    let response = get_response(comb.at(path)).await;
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

/// A plugin in another language beside its Rust twin: the same JSON but
/// for the times, the same three-span tree with `app.now` and
/// `app.result_length`.
async fn serves_and_traces_as_the_rust_plugin(
    (plugin, path): (&str, &str),
    (rust_plugin, rust_path): (&str, &str),
    span_name: &str,
    results: i64,
) {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &[rust_plugin, plugin],
        env: &traced(&receiver),
        ..Default::default()
    });
    let (status, body, trace) = get(&comb, path).await;
    assert_eq!(status, 200, "{body}");
    let (_, rust) = get_json(&comb.at(rust_path)).await;
    assert_eq!(
        timeless(body.clone()),
        timeless(rust),
        "the same activities, field by field"
    );
    // The times as Python's isoformat() writes them: two days back.
    let created = body[0]["created_at"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2026-11-24T16:11:51.054662+00:00".len(),
        "{created}"
    );
    let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
    let age = chrono::Utc::now() - created.to_utc();
    assert!(
        (age - chrono::Duration::days(2)).num_seconds().abs() < 120,
        "{age}"
    );

    let spans = receiver.trace(&trace, 3).await;
    let server = named(&spans, &format!("GET {path}"));
    let invocation = named(&spans, &format!("invoke {plugin}"));
    let guest = named(&spans, span_name);
    assert_eq!(invocation.parent_span_id, server.span_id);
    assert_eq!(guest.parent_span_id, invocation.span_id);
    for span in [server, invocation, guest] {
        assert_eq!(span.string("plugin.name"), plugin);
    }
    let now = chrono::DateTime::parse_from_rfc3339(guest.string("app.now")).unwrap();
    assert!((chrono::Utc::now() - now.to_utc()).num_seconds().abs() < 120);
    assert_eq!(guest.int("app.result_length"), results);
    assert_eq!(guest.status_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_code_in_python_serves_and_traces_as_the_rust_plugin_does() {
    serves_and_traces_as_the_rust_plugin(
        ("home_activities_py", "/api/python/activities/home"),
        ("home_activities", "/api/activities/home"),
        "home-activites-mock-data",
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_notifications_serve_and_trace_as_the_rust_plugin_does() {
    serves_and_traces_as_the_rust_plugin(
        (
            "notifications_activities_js",
            "/api/js/activities/notifications",
        ),
        ("notifications_activities", "/api/activities/notifications"),
        "notifications-activities-mock-data",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exceptions_limits_requests_and_the_otel_api() {
    misbehaves_within_bounds(
        "py",
        "ValueError: python plugin failed on purpose",
        "KeyError",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_exceptions_limits_requests_and_the_otel_api() {
    misbehaves_within_bounds(
        "js",
        "TypeError: javascript plugin failed on purpose",
        "SyntaxError",
    )
    .await;
}

/// The `misbehave` plugin of a language (`py`, `js`): `raised` is what its
/// failing route's exception says, `caught` the type it records.
async fn misbehaves_within_bounds(lang: &str, raised: &str, caught: &str) {
    let plugin = format!("misbehave_{lang}");
    let route = |path: &str| format!("/{lang}/{path}");
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities", &plugin],
        env: &traced(&receiver),
        args: &["--deadline-ms", ROOMY_DEADLINE_MS],
        ..Default::default()
    });

    // An exception: 500, its type and message on the invocation span.
    let (status, _, trace) = get(&comb, &route("raise")).await;
    assert_eq!(status, 500);
    let spans = receiver.trace(&trace, 2).await;
    let invocation = named(&spans, &format!("invoke {plugin}"));
    assert_eq!(invocation.status_code, STATUS_ERROR);
    assert!(
        invocation.status_message.contains(raised),
        "{}",
        invocation.status_message
    );
    let exception = invocation.event("exception").expect("an exception event");
    assert_eq!(
        Some(string(exception, "exception.type")),
        raised.split(':').next()
    );

    // The client's fault.
    let (status, body, _) = get(&comb, &route("bad")).await;
    assert_eq!(status, 400, "{body}");

    // The request as Python sees it, and the response it builds.
    let response = client()
        .post(comb.at(&route("echo/ada?x=1&y=2")))
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
        .post(comb.at(&route("echo/ada")))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    // OpenTelemetry's API: nesting, attributes of each type, events,
    // recording an exception, an error status, the invocation span as the
    // current one outside any span, and a log line (Python's `logging`,
    // JavaScript's `console`) as an event.
    let (status, _, trace) = get(&comb, &route("otel")).await;
    assert_eq!(status, 200);
    let spans: Vec<ReceivedSpan> = receiver.trace(&trace, 4).await;
    let invocation = named(&spans, &format!("invoke {plugin}"));
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
    assert_eq!(string(exception, "exception.type"), caught);
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

    // Without a sidecar saying otherwise, every call has a fresh instance,
    // and its invocation span says nothing of instances.
    for _ in 0..2 {
        let (status, body, trace) = get(&comb, &route("count")).await;
        assert_eq!((status, body), (200, serde_json::json!({"count": 1})));
        let spans = receiver.trace(&trace, 2).await;
        let invocation = named(&spans, &format!("invoke {plugin}"));
        assert!(invocation.attribute("plugin.instance.call").is_none());
    }

    // A hoard meets the memory limit; comb serves on.
    assert_eq!(get(&comb, &route("memory")).await.0, 500);
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    assert_eq!(get(&comb, &route("bad")).await.0, 400);

    // A loop meets the deadline (a short one: the loop never ends); the
    // plugin's next call and its neighbour are served.
    let comb = Comb::start(Options {
        plugins: &["home_activities", &plugin],
        args: &["--deadline-ms", SPIN_DEADLINE_MS],
        ..Default::default()
    });
    assert_eq!(get(&comb, &route("spin")).await.0, 504);
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_may_reuse_its_instances_and_each_call_stays_its_own() {
    reuses_instances_call_by_call("py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_plugin_may_reuse_its_instances_and_each_call_stays_its_own() {
    reuses_instances_call_by_call("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_javascript_instance_gives_its_span_handles_back_call_by_call() {
    // Each call makes two span handles (the invocation span's and its own
    // span's). An instance serving many calls must give them back as it
    // goes, not when its garbage collector runs: held, 32 handles would
    // last 16 calls (it took 500 at comb's default of 1000, then every
    // call answered 500 until the instance was replaced).
    let comb = Comb::start(Options {
        plugins: &["notifications_activities_js"],
        files: &[(
            "notifications_activities_js.toml",
            b"[limits]\nmax_instance_reuse_count = 1000\n",
        )],
        args: &[
            "--max-host-resources",
            "32",
            "--deadline-ms",
            ROOMY_DEADLINE_MS,
        ],
        ..Default::default()
    });
    for call in 1..=50 {
        let (status, body, _) = get(&comb, "/api/js/activities/notifications").await;
        assert_eq!(status, 200, "call {call}: {body}");
    }
}

/// The `misbehave` plugin of `lang` with `max_instance_reuse_count = 5` in
/// its sidecar: its globals outlive a call, up to five calls per instance;
/// a trapped instance is never reused, one whose handler failed is; a span
/// left open ends with its call, and handles kept into a later call reach
/// neither trace.
async fn reuses_instances_call_by_call(lang: &str) {
    let plugin = format!("misbehave_{lang}");
    let route = |path: &str| format!("/{lang}/{path}");
    let sidecar = format!("{plugin}.toml");
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &[&plugin],
        files: &[(&sidecar, b"[limits]\nmax_instance_reuse_count = 5\n")],
        env: &traced(&receiver),
        args: &["--deadline-ms", ROOMY_DEADLINE_MS],
        ..Default::default()
    });
    // What the plugin counted, and which call of its instance comb says it was.
    let count = async || {
        let (status, body, trace) = get(&comb, &route("count")).await;
        assert_eq!(status, 200, "{body}");
        let spans = receiver.trace(&trace, 2).await;
        let invocation = named(&spans, &format!("invoke {plugin}"));
        (
            body["count"].as_i64().unwrap(),
            invocation.int("plugin.instance.call"),
        )
    };
    assert_eq!(count().await, (1, 1));
    assert_eq!(count().await, (2, 2));

    // Call 3 keeps its invocation span and a span it leaves open; call 4
    // sets attributes and events on both and ends the open one.
    let (status, _, kept) = get(&comb, &route("keep")).await;
    assert_eq!(status, 200);
    // The span left open ended (and so was exported) with its call, before
    // the instance's next call.
    let kept = receiver.trace(&kept, 3).await;
    let left_open = named(&kept, "left-open");
    assert_eq!(
        left_open.parent_span_id,
        named(&kept, &format!("invoke {plugin}")).span_id,
    );
    let (status, _, stale) = get(&comb, &route("stale")).await;
    assert_eq!(status, 200);
    assert_eq!(
        count().await,
        (3, 5),
        "the fifth call is the instance's last"
    );
    let kept = receiver.trace(&kept[0].trace_id, 3).await;
    let stale = receiver.trace(&stale, 2).await;
    for span in kept.iter().chain(&stale) {
        assert!(span.attribute("app.stale").is_none(), "{span:#?}");
        assert!(span.event("stale").is_none(), "{span:#?}");
    }
    assert_eq!(
        stale.len(),
        2,
        "nothing but the call's own spans: {stale:#?}"
    );

    // A fresh instance after five calls; one that hit a limit (here its
    // memory: a deadline would make the test wait for it) is dropped; one
    // whose handler raised serves on.
    assert_eq!(count().await, (1, 1));
    assert_eq!(get(&comb, &route("memory")).await.0, 500);
    assert_eq!(count().await, (1, 1), "the trapped instance was not reused");
    assert_eq!(get(&comb, &route("raise")).await.0, 500);
    assert_eq!(count().await, (2, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plugin_in_python_and_in_javascript_builds_serves_and_traces() {
    // `cargo xtask new NAME --lang ...` into a folder laid out like the
    // repository, built with the repository's SDKs and tools.
    let fresh = tempfile::tempdir().unwrap();
    for (name, lang) in [("greeter", xtask::Lang::Python), ("hello", xtask::Lang::Js)] {
        xtask::new_plugin(fresh.path(), name, lang).unwrap();
    }
    // Built where the last run built them, as `cargo xtask plugins` builds
    // the repository's: a changed scaffold, SDK, WIT or tool is built
    // again, an unchanged one is not (a fresh clone builds it; a warm run
    // of the suite does not pay ~45 CPU-seconds for the same two files).
    let kept = xtask::workspace_root().join("target/test-artifacts/scaffold");
    copy_changed(fresh.path(), &kept);
    let out = kept.join("out");
    let built = xtask::build_other_languages(&kept.join("plugins"), &out).unwrap();
    assert_eq!(built, ["greeter_py.wasm", "hello_js.wasm"]);
    // Each with its sidecar beside it: the scaffold's reuses instances.
    let sidecars: Vec<String> = built.iter().map(|f| f.replace(".wasm", ".toml")).collect();
    let files: Vec<(&str, Vec<u8>)> = built
        .iter()
        .chain(&sidecars)
        .map(|file| (file.as_str(), std::fs::read(out.join(file)).unwrap()))
        .collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(f, b)| (*f, b.as_slice())).collect();
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        files: &files,
        env: &traced(&receiver),
        ..Default::default()
    });
    for name in ["greeter", "hello"] {
        let (status, body, trace) = get(&comb, &format!("/{name}?who=ada")).await;
        assert_eq!((status, body), (200, serde_json::json!({"hello": "ada"})));
        let spans = receiver.trace(&trace, 3).await;
        let invocation = named(&spans, &format!("invoke {name}"));
        assert_eq!(
            invocation.int("plugin.instance.call"),
            1,
            "reusing, first call"
        );
        let work = named(&spans, &format!("{name}-work"));
        assert_eq!(work.parent_span_id, invocation.span_id);
        assert_eq!(work.string("app.who"), "ada");
        let logged = work
            .event("log")
            .expect("the greeting is logged on the span");
        assert_eq!(string(logged, "log.message"), "greeting ada");
    }
}

/// Copies the files under `from` to the same places under `to`, writing
/// only those whose contents differ: what did not change keeps its time,
/// so a build that compares times sees it unchanged.
fn copy_changed(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_changed(&path, &target);
            continue;
        }
        let contents = std::fs::read(&path).unwrap();
        if std::fs::read(&target).ok().as_deref() != Some(&contents[..]) {
            std::fs::create_dir_all(to).unwrap();
            std::fs::write(&target, contents).unwrap();
        }
    }
}
