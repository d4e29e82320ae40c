//! What an HTTP client of comb sees.

use chrono::{DateTime, Duration, FixedOffset};
use serde_json::{Value, json};

use crate::harness::{Comb, Options, client, get_json, get_response};

fn time(value: &Value) -> DateTime<FixedOffset> {
    let text = value.as_str().expect("a timestamp string");
    assert!(
        text.ends_with("+00:00"),
        "{text} is not Python's isoformat of a UTC time"
    );
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_activities_returns_the_seed_data_relative_to_now() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let before = chrono::Utc::now();
    let (status, body) = get_json(&comb.at("/api/activities/home")).await;
    let after = chrono::Utc::now();
    assert_eq!(status, 200);

    // Every timestamp comes from one `now` taken during the request.
    let now = time(&body[0]["created_at"]) + Duration::days(2);
    assert!(
        now >= before - Duration::seconds(1) && now <= after + Duration::seconds(1),
        "now {now} not in [{before}, {after}]"
    );
    let at = |offset: Duration| {
        json!((now + offset).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
    };
    let mut expected = json!([
        {
            "uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
            "handle": "Andrew Brown",
            "message": "Cloud is very fun!",
            "likes_count": 5,
            "replies_count": 1,
            "reposts_count": 0,
            "replies": [{
                "uuid": "26e12864-1c26-5c3a-9658-97a10f8fea67",
                "reply_to_activity_uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
                "handle": "Worf",
                "message": "This post has no honor!",
                "likes_count": 0,
                "replies_count": 0,
                "reposts_count": 0,
            }],
        },
        {
            "uuid": "66e12864-8c26-4c3a-9658-95a10f8fea67",
            "handle": "Worf",
            "message": "I am out of prune juice",
            "likes": 0,
            "replies": [],
        },
        {
            "uuid": "248959df-3079-4947-b847-9e0892d1bab4",
            "handle": "Garek",
            "message": "My dear doctor, I am just simple tailor",
            "likes": 0,
            "replies": [],
        },
    ]);
    expected[0]["created_at"] = at(-Duration::days(2));
    expected[0]["expires_at"] = at(Duration::days(5));
    expected[0]["replies"][0]["created_at"] = at(-Duration::days(2));
    expected[1]["created_at"] = at(-Duration::days(7));
    expected[1]["expires_at"] = at(Duration::days(9));
    expected[2]["created_at"] = at(-Duration::hours(1));
    expected[2]["expires_at"] = at(Duration::hours(12));
    // Compare instants, not spellings, then the spelling once: Python drops
    // the fraction only when it is zero.
    for (path, value) in [
        (&body[0]["created_at"], &expected[0]["created_at"]),
        (&body[0]["expires_at"], &expected[0]["expires_at"]),
        (&body[1]["expires_at"], &expected[1]["expires_at"]),
        (&body[2]["created_at"], &expected[2]["created_at"]),
    ] {
        assert_eq!(time(path), time(value));
    }
    let canonical = |mut v: Value| {
        for item in v.as_array_mut().unwrap() {
            for key in ["created_at", "expires_at"] {
                item[key] = json!(time(&item[key]).timestamp_micros());
            }
            for reply in item["replies"].as_array_mut().unwrap() {
                reply["created_at"] = json!(time(&reply["created_at"]).timestamp_micros());
            }
        }
        v
    };
    assert_eq!(canonical(body), canonical(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404_and_wrong_methods_405_as_json() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let (status, body) = get_json(&comb.at("/api/nothing/here")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(
        body["error"]["message"],
        "no route for GET /api/nothing/here"
    );
    // A trailing slash is another path, as in the original Flask service.
    assert_eq!(get_json(&comb.at("/api/activities/home/")).await.0, 404);

    let response = client()
        .post(comb.at("/api/activities/home"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_plugin_gets_500_and_comb_keeps_serving() {
    let comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        ..Default::default()
    });
    for _ in 0..2 {
        let (status, body) = get_json(&comb.at("/faulty/unreachable")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "plugin_trapped");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("unreachable"), "{message}");

        let (status, body) = get_json(&comb.at("/faulty/panic")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "plugin_trapped");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("faulty plugin panicked on purpose"),
            "{message}"
        );

        let (status, body) = get_json(&comb.at("/faulty/error")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "plugin_error");
        assert_eq!(
            body["error"]["message"],
            "plugin faulty failed: faulty plugin failed on purpose"
        );

        // The same plugin and its neighbour still answer.
        assert_eq!(
            get_json(&comb.at("/faulty/ok")).await,
            (200, json!({"ok": true}))
        );
        assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_plugin_file_is_rejected_and_the_rest_serve() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        files: &[
            ("garbage.wasm", b"this is not wasm"),
            ("module.wasm", b"\0asm\x01\0\0\0"),
            ("notes.txt", b"ignored"),
        ],
        ..Default::default()
    });
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    let log = comb.log();
    let rejection = |file: &str| {
        log.lines()
            .find(|l| l.contains("plugin rejected") && l.contains(file))
            .unwrap_or_else(|| panic!("no rejection logged for {file}:\n{log}"))
            .to_owned()
    };
    assert!(rejection("garbage.wasm").contains("not a WebAssembly file"));
    assert!(rejection("module.wasm").contains("a core WebAssembly module, not a component"));
    assert!(
        !log.contains("notes.txt"),
        "non-.wasm files are not plugins:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_names_its_trace() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let response = get_response(comb.at("/api/activities/home")).await;
    let header = response.headers()["traceresponse"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01")
    );
    // Without an endpoint the log carries the same trace id.
    let log = comb.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("trace_id={}", parts[1]))
                && l.contains("/api/activities/home")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_file_sets_defaults_that_the_environment_overrides() {
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("comb.toml");
    std::fs::write(
        &file,
        "deadline-ms = 300\ncors-allowed-origins = [\"http://localhost:3000\"]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let slow = "/misbehave/sleep?ms=1000";

    // The file's deadline ends the call; its CORS origin is allowed.
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &[("COMB_CONFIG", file)],
        ..Default::default()
    });
    assert_eq!(get_response(comb.at(slow)).await.status(), 504);
    let response = client()
        .get(comb.at("/misbehave/sleep?ms=0"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(comb.log().contains(&format!("settings from {file}")));

    // A variable beats the file.
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &[("COMB_CONFIG", file), ("COMB_DEADLINE_MS", "5000")],
        ..Default::default()
    });
    assert_eq!(get_response(comb.at(slow)).await.status(), 200);

    // A bad file stops comb at start: comb's error for a key that is no
    // flag, clap's for a bad value, each naming the file.
    let refused = |name: &str, text: &str| {
        let file = folder.path().join(name);
        std::fs::write(&file, text).unwrap();
        let output = std::process::Command::new(crate::harness::comb_binary())
            .args(["serve", "--plugins", ".", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{name} accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused("typo.toml", "deadline = 300\n");
    assert!(
        stderr.contains("typo.toml") && stderr.contains("`deadline` is not a setting"),
        "{stderr}"
    );
    let stderr = refused("bad.toml", "deadline-ms = \"soon\"\n");
    assert!(
        stderr.contains("--deadline-ms") && stderr.contains("bad.toml"),
        "{stderr}"
    );
    // A zero that would refuse every call is refused itself.
    let stderr = refused("zero.toml", "max-concurrency = 0\n");
    assert!(
        stderr.contains("--max-concurrency")
            && stderr.contains("must be at least 1")
            && stderr.contains("zero.toml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_map_names_the_guests_compiled_functions() {
    let mut comb = Comb::start(Options {
        plugins: &["home_activities"],
        args: &["--perf-map"],
        ..Default::default()
    });
    let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", comb.pid()));
    assert_eq!(
        get_response(comb.at("/api/activities/home")).await.status(),
        200
    );
    let symbols = std::fs::read_to_string(&map).unwrap_or_default();
    assert!(comb.stop());
    let _ = std::fs::remove_file(&map);
    // `perf` reads "START SIZE NAME" lines; the plugin's own code is there
    // by name (its SDK's handler export), not only as addresses.
    assert!(
        symbols
            .lines()
            .any(|line| line.split(' ').count() >= 3 && line.contains("comb_sdk")),
        "no guest function in {}:\n{}",
        map.display(),
        &symbols[..symbols.len().min(2000)]
    );
}
