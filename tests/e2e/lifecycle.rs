//! The plugin lifecycle against the real binary: files added, replaced,
//! removed and broken while comb serves.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;
use serde_json::Value;

use crate::{
    harness::{Comb, Options, client, eventually, get_json, get_response, plugins},
    otlp::Receiver,
};

async fn reports(comb: &Comb) -> Vec<Value> {
    let (status, list) = get_json(&format!("{}/_comb/plugins", comb.admin_url)).await;
    assert_eq!(status, 200);
    list.as_array().unwrap().clone()
}

pub(crate) async fn report(comb: &Comb, file: &str) -> Option<Value> {
    reports(comb).await.into_iter().find(|r| r["file"] == file)
}

/// Copies a built plugin into the folder the way `cp` does: in place.
pub(crate) fn copy_in(comb: &Comb, plugin: &str, as_file: &str) {
    std::fs::copy(plugins().wasm(plugin), comb.plugin_path(as_file)).unwrap();
}

/// Whether a home body is `home_activities_v2`'s.
pub(crate) fn is_v2(body: &Value) -> bool {
    body.get("version").and_then(Value::as_i64) == Some(2)
}

/// A client that GETs the home route `url` over loopback until `stop` and
/// one new answer of its own (or 60 s), failing on any answer but 200 with
/// the old body or the new; returns how many of each it saw.
pub(crate) fn hammer(
    url: &str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    let (url, stop) = (url.to_owned(), stop.clone());
    tokio::spawn(async move {
        let client = client();
        let (mut old, mut new) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Told to stop, it still goes on until it has seen the new version
        // itself: the caller saw it first, and on a busy machine this
        // client's next answer may be the first new one.
        while Instant::now() < deadline
            && !(stop.load(std::sync::atomic::Ordering::Relaxed) && new > 0)
        {
            let response = client.get(&url).send().await.expect("a response");
            let status = response.status().as_u16();
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(status, 200, "{body}");
            if is_v2(&body) {
                new += 1;
            } else {
                assert_eq!(
                    body.as_array().map(Vec::len),
                    Some(3),
                    "the old body or the new: {body}"
                );
                old += 1;
            }
        }
        (old, new)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_copied_in_serves_and_a_deleted_one_is_gone() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    assert_eq!(get_json(&comb.at("/faulty/ok")).await.0, 404);
    copy_in(&comb, "faulty", "faulty.wasm");
    eventually("the new plugin serves", &comb, || async {
        get_json(&comb.at("/faulty/ok")).await.0 == 200
    })
    .await;
    let listed = report(&comb, "faulty.wasm").await.expect("listed");
    assert_eq!(listed["state"], "serving");
    assert_eq!(listed["plugin"]["name"], "faulty");
    assert_eq!(listed["plugin"]["routes"][0], "GET /faulty/ok");

    std::fs::remove_file(comb.plugin_path("faulty.wasm")).unwrap();
    eventually("the deleted plugin's routes are gone", &comb, || async {
        get_json(&comb.at("/faulty/ok")).await.0 == 404
    })
    .await;
    assert!(report(&comb, "faulty.wasm").await.is_none());
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_plugin_under_load_drops_no_request() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let url = comb.at("/api/activities/home");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two clients hammer the route over loopback while the file is swapped.
    let hammers: Vec<_> = (0..2).map(|_| hammer(&url, &stop)).collect();
    for round in 0..3 {
        for (plugin, v2) in [("home_activities_v2", true), ("home_activities", false)] {
            copy_in(&comb, plugin, "home_activities.wasm");
            eventually(
                &format!("round {round}: {plugin} serves"),
                &comb,
                || async { is_v2(&get_json(&url).await.1) == v2 },
            )
            .await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut old, mut new) = (0, 0);
    for hammer in hammers {
        let (o, n) = hammer.await.expect("no client saw an error");
        old += o;
        new += n;
    }
    assert!(
        old > 0 && new > 0,
        "both versions answered: {old} old, {new} new"
    );
    eprintln!("{old} responses from the old build, {new} from the new, none failed");
}

/// Writes one kind of broken plugin file at a path.
type BreakFile = dyn Fn(&Path);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_are_rejected_with_their_reason_and_the_old_version_keeps_serving() {
    let comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        ..Default::default()
    });
    let cases: [(&str, &BreakFile, &str); 6] = [
        (
            "garbage",
            &|path| std::fs::write(path, b"not wasm at all").unwrap(),
            "not a WebAssembly file",
        ),
        (
            "truncated",
            &|path| {
                let bytes = std::fs::read(plugins().wasm("home_activities")).unwrap();
                std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap()
            },
            "targeting comb:plugin@0.1.0",
        ),
        (
            "core module",
            &|path| std::fs::write(path, b"\0asm\x01\0\0\0").unwrap(),
            "a core WebAssembly module, not a component",
        ),
        (
            "wrong world",
            &|path| {
                std::fs::copy(plugins().wasm("wrong_world"), path).unwrap();
            },
            "no exported instance named `comb:plugin/manifest@0.1.0`",
        ),
        (
            "invalid routes",
            &|path| {
                std::fs::copy(plugins().wasm("bad_manifest"), path).unwrap();
            },
            "must start with '/'",
        ),
        (
            "route clash",
            &|path| {
                std::fs::copy(plugins().wasm("home_activities_v2"), path).unwrap();
            },
            "already served by plugin \"home_activities\"",
        ),
    ];
    for (what, write, reason) in cases {
        // Break the serving faulty.wasm in place, and add a new broken file.
        write(&comb.plugin_path("faulty.wasm"));
        write(&comb.plugin_path("zz_new.wasm"));
        eventually(&format!("{what} is reported"), &comb, || async {
            let faulty = report(&comb, "faulty.wasm").await.unwrap();
            let new = report(&comb, "zz_new.wasm").await;
            faulty["state"] == "failed" && new.is_some_and(|n| n["state"] == "failed")
        })
        .await;
        let faulty = report(&comb, "faulty.wasm").await.unwrap();
        let text = faulty["reason"].as_str().unwrap();
        assert!(text.contains(reason), "{what}: {text}");
        if what != "route clash" {
            // The previous build is still listed and still serving.
            assert_eq!(faulty["plugin"]["name"], "faulty", "{what}");
            assert_eq!(
                get_json(&comb.at("/faulty/ok")).await.0,
                200,
                "{what}: the old faulty still serves"
            );
        }
        assert!(report(&comb, "zz_new.wasm").await.unwrap()["plugin"].is_null());
        assert!(
            comb.log().lines().any(|l| l.contains("plugin rejected")
                && l.contains("zz_new.wasm")
                && l.contains(reason)),
            "{what}: one log line names the file and the reason"
        );
        assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
        // Put the good build back before the next case.
        copy_in(&comb, "faulty", "faulty.wasm");
        std::fs::remove_file(comb.plugin_path("zz_new.wasm")).unwrap();
        eventually("faulty serves again", &comb, || async {
            report(&comb, "faulty.wasm").await.unwrap()["state"] == "serving"
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_copied_file_is_never_served() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    let url = comb.at("/api/activities/home");
    let bytes = std::fs::read(plugins().wasm("home_activities_v2")).unwrap();
    let path = comb.plugin_path("home_activities.wasm");
    // A slow copy in place: a tenth of the file every 50 ms, from a thread
    // of its own, so the gaps between writes stay far below the settle
    // time however long the checks below wait on a busy machine (they ran
    // between the writes, and a loaded machine stretched a gap past it).
    // Each write is a change; loaded at any of them, the file would be
    // rejected as truncated and reported failed.
    let mut file = std::fs::File::create(&path).unwrap();
    let copy = std::thread::spawn(move || {
        for chunk in bytes.chunks(bytes.len().div_ceil(10)) {
            std::io::Write::write_all(&mut file, chunk).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        file
    });
    let mut checked = 0;
    while !copy.is_finished() || checked == 0 {
        let (status, body) = get_json(&url).await;
        assert_eq!(status, 200, "{body}");
        // The whole file may serve once written (and settled), not before.
        assert!(
            copy.is_finished() || !is_v2(&body),
            "the half file is not loaded"
        );
        let listed = report(&comb, "home_activities.wasm").await.unwrap();
        assert_eq!(listed["state"], "serving", "mid-copy: {listed}");
        checked += 1;
    }
    let file = copy.join().unwrap();
    drop(file);
    eventually("the complete file serves", &comb, || async {
        is_v2(&get_json(&url).await.1)
    })
    .await;
    assert!(
        !comb.log().contains("plugin rejected"),
        "a part of the copy was loaded: {}",
        comb.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_overrides_routes_and_a_bad_one_names_line_and_column() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        ..Default::default()
    });
    std::fs::write(
        comb.plugin_path("home_activities.toml"),
        "routes = [{ method = \"GET\", pattern = \"/v2/home\" }]\n",
    )
    .unwrap();
    eventually("the sidecar's route serves", &comb, || async {
        get_json(&comb.at("/v2/home")).await.0 == 200
    })
    .await;
    assert_eq!(
        get_json(&comb.at("/api/activities/home")).await.0,
        404,
        "the sidecar replaces the manifest's routes"
    );

    std::fs::write(
        comb.plugin_path("home_activities.toml"),
        "routes = [\n  { method = \"GET\", patern = \"/x\" },\n]\n",
    )
    .unwrap();
    eventually("the bad sidecar is reported", &comb, || async {
        report(&comb, "home_activities.wasm").await.unwrap()["state"] == "failed"
    })
    .await;
    let reason = report(&comb, "home_activities.wasm").await.unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("line 2, column") && reason.contains("patern"),
        "{reason}"
    );
    assert_eq!(
        get_json(&comb.at("/v2/home")).await.0,
        200,
        "the previous configuration keeps serving"
    );
}

/// A route pattern names every span and metric of its requests: one past
/// comb's bound is refused at load, and the other plugins serve on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_pattern_past_its_bound_is_refused_at_load() {
    let long = format!("/{}", "a".repeat(300));
    let sidecar = format!("routes = [{{ method = \"GET\", pattern = \"{long}\" }}]\n");
    let comb = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        files: &[("home_activities.toml", sidecar.as_bytes())],
        ..Default::default()
    });
    let report = report(&comb, "home_activities.wasm").await.unwrap();
    assert_eq!(report["state"], "failed", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("(301 bytes) must be at most 256 bytes of printable ASCII"),
        "{reason}"
    );
    assert_eq!(get_json(&comb.at(&long)).await.0, 404);
    assert_eq!(get_json(&comb.at("/faulty/ok")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_warm_cache_compiles_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let first = Comb::start(Options {
        plugins: &["home_activities", "faulty"],
        cache_dir: Some(cache.path()),
        ..Default::default()
    });
    for report in reports(&first).await {
        assert_eq!(report["plugin"]["cache_hit"], false, "cold: {report}");
    }
    let dir = {
        let mut first = first;
        assert!(first.stop());
        std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap())
    };
    let second = Comb::start(Options {
        dir: Some(dir),
        cache_dir: Some(cache.path()),
        ..Default::default()
    });
    let reports = reports(&second).await;
    assert_eq!(reports.len(), 2);
    for report in reports {
        assert_eq!(report["plugin"]["cache_hit"], true, "warm: {report}");
    }
    assert_eq!(get_json(&second.at("/faulty/ok")).await.0, 200);

    // A corrupt cache is detected and rebuilt, never loaded blindly.
    for entry in walk(cache.path()) {
        std::fs::write(entry, b"corrupt").unwrap();
    }
    let dir = {
        let mut second = second;
        assert!(second.stop());
        std::mem::replace(&mut second.dir, tempfile::tempdir().unwrap())
    };
    let third = Comb::start(Options {
        dir: Some(dir),
        cache_dir: Some(cache.path()),
        ..Default::default()
    });
    assert_eq!(get_json(&third.at("/faulty/ok")).await.0, 200);
    assert_eq!(get_json(&third.at("/api/activities/home")).await.0, 200);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trace_loads_off_only_requests_are_traced() {
    let receiver = Receiver::start().await;
    let mut comb = Comb::start(Options {
        plugins: &["home_activities", "bad_manifest"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("COMB_TRACE_LOADS", "false"),
        ],
        ..Default::default()
    });
    let response = get_response(comb.at("/api/activities/home")).await;
    let trace = crate::harness::trace_id(&response);
    receiver.trace(&trace, 2).await;
    assert!(comb.stop(), "{}", comb.log());
    // Shutdown flushed everything: no load of either file (the good one
    // and the rejected one) left a span.
    let others: Vec<_> = (receiver.spans().into_iter())
        .filter(|s| s.trace_id != trace)
        .map(|s| s.name)
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_is_a_plugin_load_span() {
    let receiver = Receiver::start().await;
    // A cold cache of its own: the span reports a compile.
    let cache = tempfile::tempdir().unwrap();
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        files: &[("garbage.wasm", b"nope")],
        cache_dir: Some(cache.path()),
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Default::default()
    });
    let loads = eventually("two plugin.load spans arrive", &comb, || async {
        let loads: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.name == "plugin.load")
            .collect();
        (loads.len() >= 2).then_some(loads)
    })
    .await;
    assert_eq!(
        loads.len(),
        2,
        "one span per file: {loads:#?}\n{}",
        comb.log()
    );
    let loaded = loads
        .iter()
        .find(|s| s.string("plugin.file").ends_with("home_activities.wasm"))
        .unwrap();
    assert_eq!(loaded.parent_span_id, "", "a load is its own trace");
    assert_eq!(loaded.string("plugin.name"), "home_activities");
    assert_eq!(loaded.string("plugin.load.outcome"), "loaded");
    assert_eq!(loaded.string("plugin.digest").len(), 64);
    assert!(!loaded.bool("plugin.cache_hit"));
    assert!(loaded.double("plugin.compile_ms") > 0.0);
    let rejected = loads
        .iter()
        .find(|s| s.string("plugin.file").ends_with("garbage.wasm"))
        .unwrap();
    assert_eq!(rejected.string("plugin.load.outcome"), "rejected");
    assert_eq!(rejected.status_code, 2);
    assert!(
        rejected.status_message.contains("not a WebAssembly file"),
        "{}",
        rejected.status_message
    );
}

#[test]
fn comb_plugins_checks_a_folder_offline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        plugins().wasm("home_activities"),
        dir.path().join("home_activities.wasm"),
    )
    .unwrap();
    let check = |dir: &Path| {
        std::process::Command::new(crate::harness::comb_binary())
            .args(["plugins", "--no-cache", "--plugins"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let output = check(dir.path());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("home_activities.wasm")
            && l.contains("serving")
            && l.contains("GET /api/activities/home")),
        "{table}"
    );

    std::fs::copy(
        plugins().wasm("wrong_world"),
        dir.path().join("wrong_world.wasm"),
    )
    .unwrap();
    let output = check(dir.path());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "a failing file fails the check:\n{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("wrong_world.wasm"))
        .expect("a row per file");
    assert!(
        row.contains("failed")
            && row.contains("comb:plugin/manifest@0.1.0")
            && row.contains("the component exports nothing"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_while_loading_is_logged_on_the_load_span() {
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
        ..Default::default()
    });
    let load = eventually("a plugin.load span arrives", &comb, || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "plugin.load")
    })
    .await;
    let line = load.event("log").unwrap_or_else(|| panic!("{load:#?}"));
    assert_eq!(
        crate::otlp::find(line, "log.message"),
        Some(&OtlpValue::StringValue(
            "misbehave: describing my routes".into()
        ))
    );
    let log = comb.log();
    let logged = log
        .lines()
        .find(|l| l.contains("comb::guest") && l.contains("describing my routes"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        logged.contains("misbehave.wasm"),
        "attributed to the file: {logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_plugins_serve_while_a_big_one_compiles() {
    // Compiles run one at a time. A 20 MB Python component first in the
    // folder's name order, on a cold cache, kept every plugin after it out
    // for its whole compile; loaded smallest first, home serves meanwhile.
    let cache = tempfile::tempdir().unwrap();
    let python = std::fs::read(plugins().wasm("home_activities_py")).unwrap();
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        files: &[("aaa_python.wasm", &python)],
        cache_dir: Some(cache.path()),
        before_load: true,
        ..Default::default()
    });
    eventually("home serves", &comb, || async {
        get_json(&comb.at("/api/activities/home")).await.0 == 200
    })
    .await;
    let log = comb.log();
    assert!(
        !log.contains("first load of the plugins done"),
        "home waited for the Python compile:\n{log}"
    );
}
