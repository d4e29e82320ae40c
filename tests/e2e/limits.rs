//! Limits, isolation and the sandbox, against the real binary with the
//! purpose-built `misbehave` plugin: a bad call ends itself, never the host
//! or its neighbours.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use serde_json::Value;

use crate::{
    harness::{Comb, Options, client, eventually, get_json, get_response, trace_id},
    otlp::{Receiver, find, named},
};

/// The traced settings these tests share.
pub(crate) fn traced(receiver: &Receiver) -> Vec<(&str, &str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

/// GETs `path` and returns status, JSON body (or Null) and trace id.
async fn call(comb: &Comb, path: &str) -> (u16, Value, String) {
    let response = get_response(comb.at(path)).await;
    let trace = trace_id(&response);
    let status = response.status().as_u16();
    let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body, trace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_ends_at_its_deadline_while_neighbours_keep_answering() {
    let receiver = Receiver::start().await;
    let env = traced(&receiver);
    let comb = Comb::start(Options {
        plugins: &["misbehave", "home_activities"],
        files: &[("misbehave.toml", b"[limits]\ndeadline_ms = 1000\n")],
        env: &env,
        ..Default::default()
    });
    let started = Instant::now();
    let looping = tokio::spawn({
        let url = comb.at("/misbehave/loop");
        async move {
            let response = get_response(url).await;
            (
                response.status().as_u16(),
                trace_id(&response),
                started.elapsed(),
            )
        }
    });
    // While the loop spins, the neighbour answers every time.
    let mut neighbour = Vec::new();
    while !looping.is_finished() && started.elapsed() < Duration::from_secs(20) {
        let sent = Instant::now();
        assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
        neighbour.push(sent.elapsed());
    }
    let (status, trace, elapsed) = looping.await.unwrap();
    assert_eq!(status, 504);
    assert!(
        elapsed >= Duration::from_millis(1000),
        "ended before its deadline: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "the deadline ended the call: {elapsed:?}"
    );
    neighbour.sort();
    eprintln!(
        "loop answered 504 after {elapsed:?}; {} neighbour calls meanwhile, median {:?}",
        neighbour.len(),
        neighbour.get(neighbour.len() / 2)
    );
    assert!(!neighbour.is_empty());

    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke misbehave");
    assert_eq!(invocation.string("error.type"), "wasm.trap.deadline");
    assert_eq!(invocation.string("plugin.limit.hit"), "deadline");
    assert_eq!(invocation.int("plugin.limit.deadline_ms"), 1000);
    assert!(invocation.double("plugin.guest_cpu_ms") > 0.0);
    assert_eq!(
        named(&spans, "GET /misbehave/loop").string("error.type"),
        "wasm.trap.deadline"
    );
}

/// Guest CPU time is measured only for a call whose invocation span is
/// recorded (it is reported nowhere else); an instance reused after a call
/// nobody recorded measures its next, recorded call all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_cpu_time_is_measured_on_a_reused_instance_after_an_unrecorded_call() {
    const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        files: &[(
            "home_activities.toml",
            b"[limits]\nmax_instance_reuse_count = 2\n",
        )],
        env: &traced(&receiver),
        ..Default::default()
    });
    // The caller's trace is not sampled, and comb's default sampler follows
    // its parent: nothing of this call is recorded.
    let unrecorded = client()
        .get(comb.at("/api/activities/home"))
        .header("traceparent", format!("00-{UNSAMPLED}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(unrecorded.status(), 200);
    let (status, _, trace) = call(&comb, "/api/activities/home").await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke home_activities");
    assert_eq!(
        invocation.int("plugin.instance.call"),
        2,
        "the unrecorded call's instance"
    );
    assert!(invocation.double("plugin.guest_cpu_ms") > 0.0);
    assert!(
        !receiver
            .spans()
            .iter()
            .any(|span| span.trace_id == UNSAMPLED),
        "the unsampled call was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_stopped_at_its_cap_and_the_host_stays_bounded() {
    let receiver = Receiver::start().await;
    let env = traced(&receiver);
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        files: &[("misbehave.toml", b"[limits]\nmemory_bytes = 16777216\n")],
        env: &env,
        ..Default::default()
    });
    let (status, body, trace) = call(&comb, "/misbehave/alloc").await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["code"], "memory_limit");
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke misbehave");
    assert_eq!(invocation.string("error.type"), "wasm.memory_limit");
    assert_eq!(invocation.string("plugin.limit.hit"), "memory");
    assert_eq!(
        invocation.int("plugin.limit.memory_bytes"),
        16 * 1024 * 1024
    );
    let peak = invocation.int("plugin.memory.peak_bytes");
    assert!(
        peak > 8 * 1024 * 1024 && peak <= 16 * 1024 * 1024,
        "peak {peak}"
    );

    let before = comb.rss_kib();
    for _ in 0..10 {
        assert_eq!(call(&comb, "/misbehave/alloc").await.0, 500);
    }
    let after = comb.rss_kib();
    eprintln!("host RSS {before} KiB before ten hogs, {after} KiB after");
    assert!(
        after < before + 64 * 1024,
        "the host's memory stays bounded: {before} → {after} KiB"
    );
    assert_eq!(
        call(&comb, "/misbehave/sleep?ms=0").await.0,
        200,
        "the next call is fine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_exhaustion_is_its_own_error() {
    let receiver = Receiver::start().await;
    let mut env = traced(&receiver);
    env.push(("COMB_FUEL", "50000000"));
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &env,
        ..Default::default()
    });
    let (status, body, trace) = call(&comb, "/misbehave/loop").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("fuel_exhausted"))
    );
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke misbehave");
    assert_eq!(invocation.string("error.type"), "wasm.trap.fuel");
    assert_eq!(invocation.string("plugin.limit.hit"), "fuel");

    let (status, _, trace) = call(&comb, "/misbehave/sleep?ms=0").await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke misbehave");
    assert_eq!(invocation.int("plugin.limit.fuel"), 50_000_000);
    let consumed = invocation.int("plugin.fuel.consumed");
    assert!(consumed > 0 && consumed < 50_000_000, "consumed {consumed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_concurrency_limit_get_503_with_retry_after() {
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        files: &[("misbehave.toml", b"[limits]\nmax_concurrency = 2\n")],
        ..Default::default()
    });
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let url = comb.at("/misbehave/sleep?ms=2000");
            tokio::spawn(async move {
                let response = get_response(url).await;
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), retry_after)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    let ok = outcomes.iter().filter(|(status, _)| *status == 200).count();
    let overloaded: Vec<_> = outcomes
        .iter()
        .filter(|(status, _)| *status == 503)
        .collect();
    assert!(ok >= 1 && !overloaded.is_empty(), "{outcomes:?}");
    assert_eq!(ok + overloaded.len(), 6, "only 200 or 503: {outcomes:?}");
    assert!(
        overloaded
            .iter()
            .all(|(_, retry)| retry.as_deref() == Some("1")),
        "{outcomes:?}"
    );
    assert_eq!(
        call(&comb, "/misbehave/sleep?ms=0").await.0,
        200,
        "slots come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_413_and_oversized_responses_500() {
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        files: &[(
            "misbehave.toml",
            b"[limits]\nmax_request_body = 1024\nmax_response_body = 1000\n",
        )],
        ..Default::default()
    });
    let response = client()
        .post(comb.at("/misbehave/sleep"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    let response = client()
        .post(comb.at("/misbehave/sleep"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "a body under the limit is fine");

    let (status, body, _) = call(&comb, "/misbehave/respond?bytes=2000").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("response_too_large"))
    );
    let (status, _, _) = call(&comb, "/misbehave/respond?bytes=1000").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_denies_files_env_and_sockets_unless_the_sidecar_grants_them() {
    let receiver = Receiver::start().await;
    let mut env = traced(&receiver);
    env.push(("COMB_TEST_SECRET", "s3cret"));
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("motd.txt"), "hello from the host").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &env,
        ..Default::default()
    });

    // Denied by default, with WASI's ordinary errors inside the guest.
    let (status, body, _) = call(&comb, "/misbehave/read-file?path=/etc/hostname").await;
    assert_eq!(status, 403, "{body}");
    let (status, body, _) = call(&comb, "/misbehave/env?name=COMB_TEST_SECRET").await;
    assert_eq!(status, 403, "{body}");
    let (status, body, trace) =
        call(&comb, &format!("/misbehave/connect?addr=127.0.0.1:{port}")).await;
    assert_eq!(status, 403, "{body}");
    let spans = receiver.trace(&trace, 3).await;
    let denied = named(&spans, "invoke misbehave")
        .event("sandbox.denied")
        .expect("the denial is on the span");
    let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(resource)) =
        crate::otlp::find(denied, "sandbox.resource")
    else {
        panic!("no sandbox.resource: {denied:?}")
    };
    assert_eq!(resource, "socket");

    // Granted by the sidecar (a change the running comb picks up).
    let sidecar = format!(
        "[sandbox]\ndirs = [{{ host = {:?}, guest = \"/data\" }}]\nenv = [\"COMB_TEST_SECRET\"]\nconfig = {{ GREETING = \"hi\" }}\nconnect = [\"127.0.0.1:{port}\"]\n",
        data.path()
    );
    std::fs::write(comb.plugin_path("misbehave.toml"), sidecar).unwrap();
    eventually("the grant takes effect", &comb, || async {
        call(&comb, "/misbehave/env?name=GREETING").await.0 == 200
    })
    .await;
    assert_eq!(
        call(&comb, "/misbehave/read-file?path=/data/motd.txt")
            .await
            .1["ok"],
        "hello from the host"
    );
    assert_eq!(
        call(&comb, "/misbehave/env?name=COMB_TEST_SECRET").await.1["ok"],
        "s3cret"
    );
    let (status, body, trace) =
        call(&comb, &format!("/misbehave/connect?addr=127.0.0.1:{port}")).await;
    assert_eq!((status, body["ok"].as_str()), (200, Some("connected")));
    let spans = receiver.trace(&trace, 3).await;
    assert!(
        named(&spans, "invoke misbehave")
            .event("sandbox.denied")
            .is_none()
    );
    // Only what was granted: another port stays closed, the rest of the
    // host's files stay invisible.
    assert_eq!(
        call(
            &comb,
            &format!("/misbehave/connect?addr=127.0.0.1:{}", port ^ 1)
        )
        .await
        .0,
        403
    );
    assert_eq!(
        call(&comb, "/misbehave/read-file?path=/etc/hostname")
            .await
            .0,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_a_row_do_not_grow_the_host() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let client = client();
    let url = comb.at("/api/activities/home");
    for _ in 0..100 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    let warm = comb.rss_kib();
    for _ in 0..500 {
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
    let after = comb.rss_kib();
    eprintln!("host RSS {warm} KiB after 100 calls, {after} KiB after 500 more");
    assert!(
        after < warm + 16 * 1024,
        "no growth per call: {warm} → {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_log_lines_become_span_events_and_log_lines_within_bounds() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &traced(&receiver),
        ..Options::default()
    });
    let (status, _, trace) = call(&comb, "/misbehave/log?lines=2").await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 3).await;
    let guest = named(&spans, "misbehave");
    let logs: Vec<_> = guest
        .events
        .iter()
        .filter(|(name, _)| name == "log")
        .collect();
    assert_eq!(logs.len(), 3, "{guest:#?}");
    let first = &logs[0].1;
    assert_eq!(
        find(first, "log.severity"),
        Some(&OtlpValue::StringValue("INFO".into()))
    );
    assert_eq!(
        find(first, "log.message"),
        Some(&OtlpValue::StringValue("line 0".into()))
    );
    assert_eq!(find(first, "app.line"), Some(&OtlpValue::IntValue(0)));
    assert_eq!(
        find(&logs[2].1, "log.severity"),
        Some(&OtlpValue::StringValue("WARN".into()))
    );
    // And comb's own log, with the trace it belongs to.
    let log = comb.log();
    let line = log
        .lines()
        .find(|line| line.contains("comb::guest") && line.contains("line 1"))
        .unwrap_or_else(|| panic!("no guest line in:\n{log}"));
    assert!(
        line.contains(&trace) && line.contains("plugin=misbehave"),
        "{line}"
    );
    assert!(line.contains("app.line=1"), "{line}");

    // A flood is bounded per call: the excess is counted on the span.
    let (status, _, trace) = call(&comb, "/misbehave/log?lines=400").await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 3).await;
    let invocation = named(&spans, "invoke misbehave");
    assert_eq!(invocation.int("plugin.log.dropped"), 401 - 256);
    // Every line kept is on the span: the span's event limit is above the
    // per-call line limit.
    let guest = named(&spans, "misbehave");
    let logged = guest
        .events
        .iter()
        .filter(|(name, _)| name == "log")
        .count();
    assert_eq!(logged, 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stdout_and_stderr_lines_become_span_events_and_log_lines() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &traced(&receiver),
        ..Options::default()
    });
    let (status, _, trace) = call(&comb, "/misbehave/print").await;
    assert_eq!(status, 200);
    let spans = receiver.trace(&trace, 4).await;
    // Each line goes on the span the guest had open when it wrote it.
    let line = |span: &str, message: &str| {
        let span = named(&spans, span);
        span.events
            .iter()
            .find(|(name, attributes)| {
                name == "log"
                    && find(attributes, "log.message")
                        == Some(&OtlpValue::StringValue(message.into()))
            })
            .map(|(_, attributes)| attributes.clone())
            .unwrap_or_else(|| panic!("no {message:?} on {span:#?}"))
    };
    let string = |value: &str| Some(OtlpValue::StringValue(value.into()));
    let stdout = line("inner", "to stdout in inner");
    assert_eq!(find(&stdout, "log.iostream").cloned(), string("stdout"));
    assert_eq!(find(&stdout, "log.severity").cloned(), string("INFO"));
    let stderr = line("misbehave", "to stderr");
    assert_eq!(find(&stderr, "log.iostream").cloned(), string("stderr"));
    assert_eq!(find(&stderr, "log.severity").cloned(), string("WARN"));
    // An unfinished last line is logged when the call ends, on the
    // invocation span: the guest's own spans have ended by then.
    let unfinished = line("invoke misbehave", "unfinished");
    assert_eq!(find(&unfinished, "log.iostream").cloned(), string("stdout"));

    let log = comb.log();
    let line = log
        .lines()
        .find(|line| line.contains("comb::guest") && line.contains("to stderr"))
        .unwrap_or_else(|| panic!("no guest stderr line in:\n{log}"));
    assert!(
        line.contains(&trace)
            && line.contains("plugin=misbehave")
            && line.contains("log.iostream=stderr"),
        "{line}"
    );
}
