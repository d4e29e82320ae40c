//! Two versions side by side: `home_activities_v2` (version 0.2.0, body
//! `{"version": 2}`) as a canary of `home_activities`, by its sidecar's
//! `[canary]`: its share of requests, the header that picks a version,
//! promote and abort under load with every request answered, and the
//! automatic abort of a canary that fails.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;

use crate::harness::{Comb, Options, client, eventually, get_json, plugins};

const HOME: &str = "/api/activities/home";

/// comb serving home_activities with `home_activities_v2` as its canary by
/// `rule` (the sidecar's `[canary]` table).
fn start(rule: &str) -> Comb {
    let sidecar = format!("[canary]\nof = \"home_activities\"\n{rule}");
    Comb::start(Options {
        plugins: &["home_activities", "home_activities_v2"],
        files: &[("home_activities_v2.toml", sidecar.as_bytes())],
        ..Options::default()
    })
}

/// GETs the home route; whether the canary (v2) answered it.
async fn home(client: &reqwest::Client, comb: &Comb, canary: Option<&str>) -> bool {
    let mut request = client.get(comb.at(HOME));
    if let Some(value) = canary {
        request = request.header("x-canary", value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body.get("version") == Some(&Value::from(2))
}

async fn canaries(comb: &Comb) -> Vec<Value> {
    let (status, list) = get_json(&format!("{}/_comb/api/canaries", comb.admin_url)).await;
    assert_eq!(status, 200);
    list.as_array().unwrap().clone()
}

async fn admin_post(comb: &Comb, path: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}{path}", comb.admin_url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_serves_its_share_and_a_header_picks_the_version() {
    let comb = start("weight = 25\nheader = \"x-canary\"\n");
    let list = canaries(&comb).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["plugin"], "home_activities");
    assert_eq!(list[0]["canary_version"], "0.2.0");
    assert_eq!(list[0]["weight"], 25);
    assert_ne!(list[0]["version"], "0.2.0");

    // 400 calls at 25 %: 100 expected, 8.7 the standard deviation; the
    // tolerance is over four of them.
    let client = client();
    let mut on_canary = 0;
    for _ in 0..400 {
        on_canary += usize::from(home(&client, &comb, None).await);
    }
    assert!(
        (60..=140).contains(&on_canary),
        "{on_canary} of 400 on the canary"
    );
    for _ in 0..20 {
        assert!(home(&client, &comb, Some("always")).await);
        assert!(!home(&client, &comb, Some("never")).await);
    }
    let list = canaries(&comb).await;
    let calls: Vec<u64> = serde_json::from_value(list[0]["calls"].clone()).unwrap();
    assert_eq!(calls, [400 - on_canary as u64 + 20, on_canary as u64 + 20]);
    assert_eq!(list[0]["errors"], serde_json::json!([0, 0]));

    // The plugin list shows both files serving.
    let (_, files) = get_json(&format!("{}/_comb/plugins", comb.admin_url)).await;
    let v2 = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["file"] == "home_activities_v2.wasm")
        .unwrap();
    assert_eq!(v2["state"], "serving", "{v2:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_aborted_then_promoted_under_load_fails_no_request() {
    let comb = start("weight = 50\n");
    // Four clients calling all along; every answer must be a 200.
    let (stop, answered, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, answered, failed, url) = (
            stop.clone(),
            answered.clone(),
            failed.clone(),
            comb.at(HOME),
        );
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        answered.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Abort: the plugin serves every request at once; the canary's file
    // is set aside.
    let (status, aborted) = admin_post(&comb, "/_comb/api/canaries/home_activities/abort").await;
    assert_eq!(status, 200, "{aborted}");
    assert_eq!(aborted["aborted"]["canary_version"], "0.2.0");
    let client = client();
    for _ in 0..50 {
        assert!(
            !home(&client, &comb, None).await,
            "the canary still answers"
        );
    }
    let aside = comb.plugin_path("home_activities_v2.wasm.aborted");
    assert!(aside.exists() && !comb.plugin_path("home_activities_v2.wasm").exists());
    let (status, _) = admin_post(&comb, "/_comb/api/canaries/home_activities/abort").await;
    assert_eq!(status, 409, "no canary left to abort");

    // Put back by hand, it is a canary again.
    std::fs::rename(&aside, comb.plugin_path("home_activities_v2.wasm")).unwrap();
    eventually("the canary is attached again", &comb, || async {
        (canaries(&comb).await.len() == 1).then_some(())
    })
    .await;

    // Promote: its file replaces the plugin's; once served, every
    // request gets version 2, and there is no canary any more.
    let (status, promoted) = admin_post(&comb, "/_comb/api/canaries/home_activities/promote").await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(promoted["serving"], true, "{promoted}");
    for _ in 0..50 {
        assert!(
            home(&client, &comb, None).await,
            "the old version still answers"
        );
    }
    eventually("the promoted canary's file is gone", &comb, || async {
        canaries(&comb).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read(comb.plugin_path("home_activities.wasm")).unwrap(),
        std::fs::read(plugins().wasm("home_activities_v2")).unwrap()
    );

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(answered > 0);
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed",
        answered + failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_past_its_margin_aborts_itself() {
    // A copy of the plugin whose answers may be one byte long: every
    // call it takes answers 500 (response_too_large).
    let sidecar = b"[limits]\nmax_response_body = 1\n\n[canary]\nof = \"home_activities\"\nweight = 50\nabort_error_rate_increase = 20\n";
    let home_wasm = std::fs::read(plugins().wasm("home_activities")).unwrap();
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        files: &[
            ("home_broken.wasm", &home_wasm),
            ("home_broken.toml", sidecar),
        ],
        ..Options::default()
    });
    assert_eq!(canaries(&comb).await.len(), 1);
    let client = client();
    let mut failures = 0;
    for _ in 0..400 {
        let response = client.get(comb.at(HOME)).send().await.unwrap();
        if response.status().is_server_error() {
            failures += 1;
        }
        if canaries(&comb).await.is_empty() {
            break;
        }
    }
    assert!(
        canaries(&comb).await.is_empty(),
        "the canary was not aborted"
    );
    assert!(failures >= 20, "{failures} failures before the abort");
    for _ in 0..50 {
        let response = client.get(comb.at(HOME)).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    eventually("its file set aside", &comb, || async {
        comb.plugin_path("home_broken.wasm.aborted")
            .exists()
            .then_some(())
    })
    .await;
    assert!(
        comb.log()
            .contains("exceeds the plugin's by more than its margin"),
        "{}",
        comb.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_canary_beside_its_plugin() {
    let comb = start("weight = 10\nheader = \"x-canary\"\n");
    let client = client();
    // 40 calls on each version, by the header: both have enough calls.
    for _ in 0..40 {
        assert!(home(&client, &comb, Some("always")).await);
        assert!(!home(&client, &comb, Some("never")).await);
    }
    let url = format!("{}/_comb/api/stats?window=300", comb.admin_url);
    let home_stats = eventually("the recorder saw the 80 calls", &comb, || async {
        let (_, stats) = get_json(&url).await;
        stats["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plugin"] == "home_activities" && p["requests"] == 80)
            .cloned()
    })
    .await;
    let versions = home_stats["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{home_stats:#}");
    assert!(versions.iter().all(|v| v["requests"] == 40));
    assert!(
        versions
            .iter()
            .any(|v| v["build"].as_str().unwrap().starts_with("0.2.0 ("))
    );
    let comparison = &home_stats["comparison"];
    assert_eq!(comparison["enough"], true, "{comparison:#}");
    assert_eq!(comparison["error_rate"]["estimate"], 0.0);
    assert_eq!(comparison["error_rate"]["shown"], false);
    for key in ["p50_ms", "p95_ms", "cpu_p50_ms", "memory_p50_mib"] {
        let difference = &comparison[key];
        assert!(difference["estimate"].is_f64(), "{key}: {comparison:#}");
        if let (Some(low), Some(high)) = (difference["low"].as_f64(), difference["high"].as_f64()) {
            assert!(low <= high, "{key}: {difference}");
        }
    }

    let page = format!("{}/_comb/", comb.admin_url);
    let dom = tokio::task::spawn_blocking({
        let page = page.clone();
        move || crate::page::headless(&page, &["--dump-dom"])
    })
    .await
    .unwrap();
    let section = &dom[dom
        .find(r#"id="versions-section""#)
        .expect("the versions section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert!(
        !section.starts_with(r#"id="versions-section" hidden"#),
        "{section}"
    );
    assert!(section.contains("canary 0.2.0 at 10 %"), "{section}");
    assert!(section.contains(r#"data-action="promote""#), "{section}");
    assert!(section.contains(r#"data-action="abort""#), "{section}");
    assert_eq!(
        section.matches(r#"<tr class="version""#).count(),
        2,
        "{section}"
    );
    assert!(section.contains(r#"<tr class="difference""#), "{section}");

    let artifacts = xtask::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("comb-canary.png");
    let _ = std::fs::remove_file(&screenshot);
    let argument = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || {
        crate::page::headless(&page, &[&argument, "--window-size=1400,900"])
    })
    .await
    .unwrap();
    assert!(std::fs::read(&screenshot).unwrap().starts_with(b"\x89PNG"));
}
