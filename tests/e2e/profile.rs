//! A guest profile on demand (`POST /_comb/api/profile`): wasmtime's guest
//! profiler samples one plugin's calls for a while and comb answers the
//! Firefox Profiler's format; one at a time per plugin, bounded by time or
//! calls, ended by its client going away.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;

use crate::harness::{Comb, Options, client};

fn start() -> Comb {
    Comb::start(Options {
        plugins: &["misbehave", "home_activities"],
        ..Options::default()
    })
}

/// Calls `path` back to back until the returned flag is set.
pub(crate) fn keep_calling(comb: &Comb, path: &str) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (url, flag) = (comb.at(path), stop.clone());
    tokio::spawn(async move {
        let client = client();
        while !flag.load(Ordering::Relaxed) {
            let response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
    });
    stop
}

async fn ask_profile(comb: &Comb, query: &str) -> reqwest::Response {
    client()
        .post(format!("{}/_comb/api/profile?{query}", comb.admin_url))
        .send()
        .await
        .unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

/// The function on top of the most samples, as the Firefox Profiler's
/// processed format records them (one thread: its samples' stacks, each
/// a frame and a prefix, frames naming functions in the string table).
pub(crate) fn hottest_function(profile: &Value) -> String {
    let thread = &profile["threads"][0];
    let index = |table: &str, column: &str, i: u64| thread[table][column][i as usize].as_u64();
    let mut leaves: HashMap<String, usize> = HashMap::new();
    for stack in thread["samples"]["stack"].as_array().unwrap() {
        let Some(stack) = stack.as_u64() else {
            continue;
        };
        let frame = index("stackTable", "frame", stack).unwrap();
        let func = index("frameTable", "func", frame).unwrap();
        let name = index("funcTable", "name", func).unwrap();
        let name = thread["stringArray"][name as usize].as_str().unwrap();
        *leaves.entry(name.to_owned()).or_default() += 1;
    }
    leaves
        .into_iter()
        .max_by_key(|(_, count)| *count)
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("no samples in {profile:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_profile_names_the_function_a_plugin_spends_its_time_in() {
    let comb = start();
    let traffic = keep_calling(&comb, "/misbehave/spin?ms=20");
    let response = ask_profile(&comb, "plugin=misbehave&seconds=2").await;
    traffic.store(true, Ordering::Relaxed);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"misbehave.profile.json\""
    );
    let (calls, samples) = (
        header(&response, "comb-profile-calls"),
        header(&response, "comb-profile-samples"),
    );
    assert!(
        calls >= 1 && samples >= 1,
        "{calls} calls, {samples} samples"
    );
    let profile: Value = response.json().await.unwrap();
    assert_eq!(profile["meta"]["product"], "misbehave");
    let hottest = hottest_function(&profile);
    assert!(
        hottest.starts_with("misbehave::spin_for"),
        "the busy function on top, not {hottest}"
    );
    // Only the plugin's own modules: no host frame, no address.
    assert!(profile["libs"].as_array().unwrap().iter().all(|lib| {
        lib["path"]
            .as_str()
            .is_none_or(|path| !path.starts_with('/'))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_is_one_at_a_time_bounded_by_its_calls_and_ends_with_its_client() {
    let comb = start();
    let response = ask_profile(&comb, "plugin=nobody").await;
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("nobody"));
    // A page on another site cannot make a browser ask: its origin is not
    // this listener's host. comb's own page's is.
    let from = |origin: String, plugin: &str| {
        client()
            .post(format!(
                "{}/_comb/api/profile?plugin={plugin}",
                comb.admin_url
            ))
            .header("origin", origin)
            .send()
    };
    let forged = from("http://evil.example".into(), "misbehave")
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let own = from(comb.admin_url.clone(), "nobody").await.unwrap();
    assert_eq!(own.status(), 404);

    // A long profile, then a second of the same plugin: refused while the
    // first is taken.
    let long_profile = || {
        let url = format!(
            "{}/_comb/api/profile?plugin=misbehave&seconds=60",
            comb.admin_url
        );
        tokio::spawn(async move { client().post(url).send().await })
    };
    let mut first = long_profile();
    let mut refused = None;
    for _ in 0..20 {
        // Starting reads the plugin's symbols: a probe sent meanwhile may
        // win the plugin instead, and the first then ends refused.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if first.is_finished() {
            first = long_profile();
            continue;
        }
        let second = ask_profile(&comb, "plugin=misbehave&seconds=1&calls=1").await;
        if second.status() == 409 {
            refused = Some(second.text().await.unwrap());
            break;
        }
    }
    let refused = refused.expect("a second profile of the same plugin refused");
    assert!(refused.contains("being taken already"), "{refused}");
    // Another plugin's is not.
    let other = ask_profile(&comb, "plugin=home_activities&seconds=1").await;
    assert_eq!(other.status(), 200);

    // The first one's client gives up: its profile ends with it. A profile
    // of one call then answers as soon as that call is over.
    first.abort();
    let _ = first.await;
    let last = tokio::spawn({
        let url = format!(
            "{}/_comb/api/profile?plugin=misbehave&seconds=60&calls=1",
            comb.admin_url
        );
        async move { client().post(url).send().await.unwrap() }
    });
    let started = std::time::Instant::now();
    while !last.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the one-call profile never ended"
        );
        let response = client()
            .get(comb.at("/misbehave/spin?ms=5"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = last.await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert_eq!(header(&response, "comb-profile-calls"), 1);
}
