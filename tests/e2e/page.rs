//! comb's own page and its JSON API, with no OTLP endpoint at all: the
//! numbers after a known mix of requests, the trace list and one trace's
//! span tree; then the page itself in a real headless Chromium.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

use crate::{
    harness::{Comb, Options, client, eventually, get_json, trace_id},
    profile::keep_calling,
};

/// Known traffic: home_activities fast and healthy, misbehave slowed to
/// ≥ 40 ms, faulty failing four times in ten. Returns one home trace id.
async fn known_mix(comb: &Comb) -> String {
    let client = client();
    let mut home_trace = String::new();
    for _ in 0..20 {
        let response = client
            .get(comb.at("/api/activities/home"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        home_trace = trace_id(&response);
    }
    for _ in 0..6 {
        let response = client
            .get(comb.at("/misbehave/sleep?ms=40"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for path in ["/faulty/ok", "/faulty/error"].iter().cycle().take(8) {
        client.get(comb.at(path)).send().await.unwrap();
    }
    for _ in 0..2 {
        client.get(comb.at("/faulty/ok")).send().await.unwrap();
    }
    home_trace
}

fn start() -> Comb {
    Comb::start(Options {
        plugins: &["home_activities", "misbehave", "faulty"],
        ..Options::default()
    })
}

/// The stats once the recorder has seen `total` requests (it aggregates
/// on its own thread, a moment after the responses).
async fn stats_after(comb: &Comb, total: u64) -> Value {
    let url = format!("{}/_comb/api/stats?window=300", comb.admin_url);
    let stats = eventually(
        &format!("the recorder saw {total} requests"),
        comb,
        || async {
            let (status, stats) = get_json(&url).await;
            assert_eq!(status, 200);
            let seen: u64 = stats["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum();
            (seen >= total).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["recording"], true);
    stats
}

fn plugin<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {stats:#}"))
}

fn ms(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {row:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api_compares_plugins_side_by_side() {
    let comb = start();
    let home_trace = known_mix(&comb).await;
    let stats = stats_after(&comb, 36).await;

    let (home, slow, faulty) = (
        plugin(&stats, "home_activities"),
        plugin(&stats, "misbehave"),
        plugin(&stats, "faulty"),
    );
    assert_eq!(home["requests"], 20);
    assert_eq!(slow["requests"], 6);
    assert_eq!(faulty["requests"], 10);
    assert_eq!(home["error_rate"], 0.0);
    assert_eq!(faulty["errors"], 4);
    assert_eq!(faulty["error_rate"], 0.4);
    assert_eq!(home["coldstarts"], 1);
    for row in [home, slow, faulty] {
        assert!(ms(row, "p50_ms") <= ms(row, "p95_ms"), "{row:#}");
        assert!(ms(row, "p95_ms") <= ms(row, "p99_ms"), "{row:#}");
        assert!(!row["series"].as_array().unwrap().is_empty());
    }
    assert!(ms(slow, "p50_ms") >= 40.0, "{slow:#}");
    assert!(ms(slow, "p50_ms") > ms(home, "p50_ms"), "{stats:#}");

    // What the guests used, beside the latency: every call reached a
    // guest; CPU time is the guest's own, so misbehave's sleep (in the
    // host, waiting) is latency but not CPU; peak memory is at least the
    // page a guest starts with.
    assert_eq!(home["measured"], 20, "{home:#}");
    assert_eq!(faulty["measured"], 10, "{faulty:#}");
    for row in [home, slow, faulty] {
        assert!(ms(row, "cpu_p50_ms") <= ms(row, "cpu_p95_ms"), "{row:#}");
        assert!(ms(row, "cpu_p95_ms") <= ms(row, "cpu_p99_ms"), "{row:#}");
        assert!(ms(row, "memory_p50_mib") >= 0.0625, "{row:#}");
        assert!(
            ms(row, "memory_p50_mib") <= ms(row, "memory_p99_mib"),
            "{row:#}"
        );
    }
    assert!(ms(slow, "cpu_p50_ms") < 40.0, "{slow:#}");

    // Per route: the failing route carries all of faulty's errors.
    let routes = faulty["routes"].as_array().unwrap();
    let route = |pattern: &str| routes.iter().find(|r| r["route"] == pattern).unwrap();
    assert_eq!(route("/faulty/ok")["requests"], 6);
    assert_eq!(route("/faulty/ok")["error_rate"], 0.0);
    assert_eq!(route("/faulty/error")["requests"], 4);
    assert_eq!(route("/faulty/error")["error_rate"], 1.0);

    // Traces: filtered by plugin, failures marked as kept.
    let (_, list) = get_json(&format!(
        "{}/_comb/api/traces?plugin=faulty",
        comb.admin_url
    ))
    .await;
    let traces = list["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 10);
    assert!(traces.iter().all(|t| t["plugin"] == "faulty"));
    let failed: Vec<_> = traces.iter().filter(|t| t["failed"] == true).collect();
    assert_eq!(failed.len(), 4);
    assert!(
        failed
            .iter()
            .all(|t| t["kept"] == "failed" && t["status"] == 500)
    );
    let (_, by_route) = get_json(&format!(
        "{}/_comb/api/traces?plugin=faulty&route=/faulty/ok",
        comb.admin_url
    ))
    .await;
    assert_eq!(by_route["traces"].as_array().unwrap().len(), 6);

    // One trace: the whole tree with every attribute.
    let (status, trace) =
        get_json(&format!("{}/_comb/api/traces/{home_trace}", comb.admin_url)).await;
    assert_eq!(status, 200, "{trace:#}");
    let spans = trace["spans"].as_array().unwrap();
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {trace:#}"))
    };
    let server = named("GET /api/activities/home");
    let invoke = named("invoke home_activities");
    let guest = named("home-activites-mock-data");
    assert_eq!(server["kind"], "server");
    assert_eq!(server["parent_span_id"], "");
    assert_eq!(invoke["parent_span_id"], server["span_id"]);
    assert_eq!(guest["parent_span_id"], invoke["span_id"]);
    assert_eq!(guest["attributes"]["app.result_length"], 3);
    assert!(guest["attributes"]["app.now"].is_string());
    assert_eq!(server["attributes"]["http.response.status_code"], 200);

    let (status, _) = get_json(&format!("{}/_comb/api/stats?window=7", comb.admin_url)).await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&format!(
        "{}/_comb/api/traces/{}",
        comb.admin_url,
        "0".repeat(32)
    ))
    .await;
    assert_eq!(status, 404);
}

/// Debian's Chromium, which `cargo xtask test` installs when missing.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "the page test needs Chromium at {}: run the tests with `cargo xtask test`, which installs it",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `args` (plus the flags a closed
/// network and a root user need) and returns its stdout.
pub(crate) fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            // Virtual time runs until the page's fetches are done.
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_chromium() {
    let comb = start();
    let home_trace = known_mix(&comb).await;
    stats_after(&comb, 36).await;
    let url = format!("{}/_comb/#trace={home_trace}", comb.admin_url);

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    for plugin in ["home_activities", "misbehave", "faulty"] {
        assert!(
            dom.contains(&format!(r#"<tr class="plugin" data-plugin="{plugin}">"#)),
            "no row for {plugin} in:\n{dom}"
        );
        assert!(
            dom.contains(&format!(r#"data-plugin="{plugin}"></path>"#)),
            "no chart line for {plugin} in:\n{dom}"
        );
    }
    let usage = &dom[dom.find(r#"<table id="usage">"#).expect("the usage table")..];
    let usage = &usage[..usage.find("</table>").unwrap()];
    for plugin in ["home_activities", "misbehave", "faulty"] {
        assert!(
            usage.contains(&format!(r#"<tr class="plugin" data-plugin="{plugin}">"#)),
            "no CPU and memory row for {plugin} in:\n{usage}"
        );
    }
    assert!(
        dom.contains(r#"class="span-row"#),
        "no waterfall in:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-name="home-activites-mock-data""#),
        "no home-activites-mock-data in the waterfall:\n{dom}"
    );
    assert!(dom.contains(r#"data-key="app.result_length""#), "{dom}");

    // A trace's log lines sit in its waterfall, under the span each was
    // logged on, with their severity.
    let printed = client()
        .get(comb.at("/misbehave/print"))
        .send()
        .await
        .unwrap();
    let printed = trace_id(&printed);
    let url_printed = format!("{}/_comb/#trace={printed}", comb.admin_url);
    let dom_printed = eventually("the printing trace is recorded", &comb, || {
        let url = url_printed.clone();
        async move {
            let dom = tokio::task::spawn_blocking(move || headless(&url, &["--dump-dom"]))
                .await
                .unwrap();
            dom.contains(r#"class="log-row""#).then_some(dom)
        }
    })
    .await;
    let stderr = dom_printed
        .split(r#"<div class="log-row""#)
        .find(|row| row.contains("to stderr"))
        .unwrap_or_else(|| panic!("no stderr line in the waterfall:\n{dom_printed}"));
    assert!(stderr.contains(r#"data-severity="WARN""#), "{stderr}");
    assert!(stderr.contains("stderr"), "{stderr}");

    // The view comes from the URL: a window and a plugin filter.
    let filtered = format!("{}/_comb/#window=60&plugin=faulty", comb.admin_url);
    let dom = tokio::task::spawn_blocking(move || headless(&filtered, &["--dump-dom"]))
        .await
        .unwrap();
    let rows: Vec<&str> = dom.split(r#"<tr class="trace"#).skip(1).collect();
    assert!(!rows.is_empty(), "no trace rows in:\n{dom}");
    for row in rows {
        let row = &row[..row.find('>').unwrap()];
        assert!(row.contains(r#"data-plugin="faulty""#), "{row}");
    }
    assert!(
        dom.contains("−1 min"),
        "the chart does not span 1 minute:\n{dom}"
    );

    // A guest profile, taken as the page opens (`#profile=`) while a
    // plugin computes, drawn as a flame graph with the busy function in it.
    let traffic = keep_calling(&comb, "/misbehave/spin?ms=5");
    let url = format!("{url}&profile=misbehave&seconds=1");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    let flame = &dom[dom.find(r#"id="flame""#).expect("the flame graph")..];
    let flame = &flame[..flame.find("</svg>").unwrap()];
    assert!(
        flame.contains(r#"data-func="misbehave::spin_for""#),
        "no spin_for in the flame graph:\n{flame}"
    );
    assert!(
        dom.contains("download it for the Firefox Profiler"),
        "{dom}"
    );

    // A screenshot for people, kept as a test artifact: the plugins side
    // by side, a trace, and the profile.
    let artifacts = xtask::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("comb-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let argument = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || headless(&url, &[&argument, "--window-size=1400,1900"]))
        .await
        .unwrap();
    traffic.store(true, std::sync::atomic::Ordering::Relaxed);
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
}
