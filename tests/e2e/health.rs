//! The orchestrator's probes on their own listener: ready only between the
//! first load of the folder and SIGTERM (until then a path nothing serves
//! yet is 503, not 404), and serving on through the shutdown delay.

use std::time::{Duration, Instant};

use crate::harness::{Comb, Options, eventually, get_json, get_response};

async fn probe(url: &str) -> (u16, String) {
    let response = get_response(url).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_first_load_and_the_drain() {
    let mut comb = Comb::start(Options {
        // Its manifest sleeps until the 5 s manifest deadline: the first
        // load takes that long.
        plugins: &["home_activities", "sleepy_manifest"],
        env: &[("COMB_SHUTDOWN_DELAY_MS", "1500")],
        health: true,
        before_load: true,
        ..Default::default()
    });
    let health = comb.health_url.clone().unwrap();
    let (livez, readyz) = (format!("{health}/livez"), format!("{health}/readyz"));
    assert_eq!(probe(&livez).await, (200, "ok\n".to_owned()));
    assert_eq!(probe(&readyz).await, (503, "loading plugins\n".to_owned()));
    // The probes are all that listener serves.
    assert_eq!(probe(&format!("{health}/_comb/")).await.0, 404);
    // A path no plugin serves yet may be a still loading plugin's: 503.
    let unknown = comb.at("/served/by/nobody");
    let response = get_response(&unknown).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "loading");

    eventually("ready once the first load is done", &comb, || async {
        probe(&readyz).await.0 == 200
    })
    .await;
    assert!(comb.log().contains("first load of the plugins done"));
    assert_eq!(get_json(&unknown).await.0, 404);

    comb.terminate();
    let terminated = Instant::now();
    eventually("not ready once terminating", &comb, || async {
        probe(&readyz).await == (503, "draining\n".to_owned())
    })
    .await;
    // Still serving through the delay.
    assert_eq!(get_json(&comb.at("/api/activities/home")).await.0, 200);
    assert_eq!(probe(&livez).await.0, 200);
    assert!(comb.wait_exit(), "{}", comb.log());
    assert!(
        terminated.elapsed() >= Duration::from_millis(1500),
        "exited {:?} after SIGTERM",
        terminated.elapsed()
    );
}
