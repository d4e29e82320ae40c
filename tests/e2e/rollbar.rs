//! Failed plugin calls as Rollbar items, read by a Rollbar stand-in on
//! loopback: the item's shape, the scrubbed headers, the link to the
//! trace, grouping, the per-plugin rate, and a Rollbar that refuses.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use serde_json::Value;

use crate::{
    harness::{Comb, Options, client, eventually, get_response, poll, silent_listener, trace_id},
    otlp::{Receiver, named},
};

const TOKEN: &str = "test-token";

/// How the stand-in answers.
#[derive(Clone, Copy)]
enum Answer {
    Accept,
    /// 429 with `X-Rate-Limit-Remaining-Seconds: 1` for the first item
    /// attempt, then 200.
    RateLimitedOnce,
    /// 500 for the first item attempt, then 200.
    FailsOnce,
    /// 401 to every item, as for a wrong token.
    Unauthorized,
}

/// A Rollbar item endpoint on loopback that keeps what it is sent.
struct Rollbar {
    endpoint: String,
    /// Every attempt: when, the token header, the JSON.
    received: Arc<Mutex<Vec<(Instant, String, Value)>>>,
    /// Every deploy recorded.
    deploys: Arc<Mutex<Vec<Value>>>,
}

impl Rollbar {
    async fn start(answer: Answer) -> Rollbar {
        let received: Arc<Mutex<Vec<(Instant, String, Value)>>> = Arc::default();
        let kept = received.clone();
        let deploys: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept_deploys = deploys.clone();
        let app = Router::new()
            .route(
                "/api/1/deploy",
                post(move |body: Bytes| async move {
                    let deploy = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    kept_deploys.lock().unwrap().push(deploy);
                    "{\"err\":0}"
                }),
            )
            .route(
                "/api/1/item/",
                post(move |headers: HeaderMap, body: Bytes| {
                    let kept = kept.clone();
                    async move {
                        let token = (headers.get("x-rollbar-access-token"))
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let item: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let mut kept = kept.lock().unwrap();
                        kept.push((Instant::now(), token, item));
                        match answer {
                            Answer::RateLimitedOnce if kept.len() == 1 => (
                                StatusCode::TOO_MANY_REQUESTS,
                                [("x-rate-limit-remaining-seconds", "1")],
                                "{\"err\":1}",
                            )
                                .into_response(),
                            Answer::FailsOnce if kept.len() == 1 => {
                                (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()
                            }
                            Answer::Unauthorized => (
                                StatusCode::UNAUTHORIZED,
                                "{\"err\":1,\"message\":\"invalid access token\"}",
                            )
                                .into_response(),
                            _ => (StatusCode::OK, "{\"err\":0}").into_response(),
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Rollbar {
            endpoint: format!("http://{address}/api/1/"),
            received,
            deploys,
        }
    }

    /// The items received, each once (the last attempt of each uuid).
    fn items(&self) -> Vec<Value> {
        let mut items: Vec<Value> = Vec::new();
        for (_, _, item) in self.received.lock().unwrap().iter() {
            items.retain(|kept| kept["data"]["uuid"] != item["data"]["uuid"]);
            items.push(item.clone());
        }
        items
    }
}

fn env<'a>(rollbar: &'a Rollbar, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("ROLLBAR_ACCESS_TOKEN", TOKEN),
        ("ROLLBAR_ENDPOINT", rollbar.endpoint.as_str()),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_becomes_a_rollbar_item_that_leads_to_its_trace() {
    let rollbar = Rollbar::start(Answer::Accept).await;
    let receiver = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &env(
            &rollbar,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.http_url),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
                ("COMB_ROLLBAR_SCRUB_HEADERS", "x-secret"),
                (
                    "COMB_ROLLBAR_TRACE_URL",
                    "http://traces.example/trace?trace_id={trace_id}",
                ),
            ],
        ),
        ..Default::default()
    });
    assert!(comb.log().contains("reported to Rollbar"), "{}", comb.log());
    let response = client()
        .get(comb.at("/faulty/panic?x=1"))
        .header("authorization", "Bearer hunter2")
        .header("cookie", "session=abc")
        .header("x-secret", "s3")
        .header("x-kept", "visible")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let trace = trace_id(&response);
    let item = eventually("the item arrives", &comb, || async {
        rollbar.items().into_iter().next()
    })
    .await;
    let (_, token, _) = rollbar.received.lock().unwrap()[0].clone();
    assert_eq!(token, TOKEN);
    let data = &item["data"];
    assert_eq!(data["environment"], "production");
    assert_eq!(data["level"], "error");
    assert_eq!(data["framework"], "comb");
    assert_eq!(data["notifier"]["name"], "comb");
    assert!(
        data["uuid"].as_str().is_some_and(|u| u.len() == 36),
        "{data}"
    );
    // The plugin's version and the start of its digest.
    assert!(
        data["code_version"].as_str().unwrap().starts_with("0.0.1+"),
        "{data}"
    );
    assert_eq!(
        data["title"],
        "faulty: wasm.panic: faulty plugin panicked on purpose"
    );
    let exception = &data["body"]["trace"]["exception"];
    assert_eq!(exception["class"], "wasm.panic");
    assert!(
        (exception["message"].as_str().unwrap()).contains("faulty plugin panicked on purpose"),
        "{exception}"
    );
    let frames = data["body"]["trace"]["frames"].as_array().unwrap();
    // Oldest first: the handler comb called, then down to the abort.
    assert_eq!(
        frames[0]["method"], "comb:plugin/handler@0.1.0#handle",
        "{frames:#?}"
    );
    assert_eq!(frames[0]["filename"], "faulty.wasm");
    assert!(
        (frames.last().unwrap()["method"].as_str().unwrap()).contains("abort"),
        "{frames:#?}"
    );
    let request = &data["request"];
    assert_eq!(request["method"], "GET");
    assert!(
        request["url"]
            .as_str()
            .unwrap()
            .ends_with("/faulty/panic?x=1")
    );
    assert_eq!(request["query_string"], "x=1");
    assert_eq!(request["user_ip"], "127.0.0.1");
    let headers = request["headers"].as_object().unwrap();
    assert_eq!(headers["x-kept"], "visible");
    for scrubbed in ["authorization", "cookie", "x-secret"] {
        assert!(
            !headers.contains_key(scrubbed),
            "{scrubbed} sent: {headers:?}"
        );
    }
    // The item leads to the trace: its ids are the invocation span's.
    let custom = &data["custom"];
    assert_eq!(custom["trace_id"], trace.as_str());
    assert_eq!(custom["plugin.name"], "faulty");
    assert_eq!(custom["http.route"], "/faulty/panic");
    assert_eq!(
        custom["trace_url"],
        format!("http://traces.example/trace?trace_id={trace}")
    );
    let spans = receiver.trace(&trace, 2).await;
    let invocation = named(&spans, "invoke faulty");
    assert_eq!(custom["span_id"], invocation.span_id.as_str());
    assert_eq!(custom["plugin.digest"], invocation.string("plugin.digest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failure_is_one_group_and_a_storm_is_bounded_per_plugin() {
    let rollbar = Rollbar::start(Answer::Accept).await;
    let mut comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &env(&rollbar, &[("COMB_ROLLBAR_ITEMS_PER_MINUTE", "3")]),
        ..Default::default()
    });
    for _ in 0..10 {
        let response = get_response(comb.at("/faulty/panic")).await;
        assert_eq!(response.status(), 500);
    }
    poll(
        "three items arrive",
        || format!("{:#?}", rollbar.items()),
        || async { rollbar.items().len() >= 3 },
    )
    .await;
    assert!(comb.stop(), "{}", comb.log());
    let items = rollbar.items();
    assert_eq!(items.len(), 3, "{items:#?}");
    let fingerprints: Vec<&Value> = items.iter().map(|i| &i["data"]["fingerprint"]).collect();
    assert!(
        fingerprints.iter().all(|f| *f == fingerprints[0]),
        "{fingerprints:?}"
    );
    let log = comb.log();
    assert_eq!(
        log.matches("over the per-plugin Rollbar rate").count(),
        1,
        "the rate is logged once:\n{log}"
    );
    assert!(log.contains("dropped=7"), "{log}");
}

/// Fails `path` once against a stand-in that refuses the first attempt as
/// `answer` says, and checks the same item arrives again after at least
/// `wait`, with `error.type` `class`.
async fn sent_again(answer: Answer, path: &str, wait: Duration, class: &str) {
    let rollbar = Rollbar::start(answer).await;
    let comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &env(&rollbar, &[]),
        ..Default::default()
    });
    let response = get_response(comb.at(path)).await;
    assert_eq!(response.status(), 500);
    eventually("the item is sent again", &comb, || async {
        rollbar.received.lock().unwrap().len() >= 2
    })
    .await;
    let received = rollbar.received.lock().unwrap().clone();
    let waited = received[1].0 - received[0].0;
    assert!(waited >= wait, "retried after {waited:?}");
    assert_eq!(received[0].2["data"]["uuid"], received[1].2["data"]["uuid"]);
    assert_eq!(
        received[1].2["data"]["body"]["trace"]["exception"]["class"],
        class
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_rollbar_gets_the_item_after_the_wait_it_asks_for() {
    // X-Rate-Limit-Remaining-Seconds: 1.
    let wait = Duration::from_millis(900);
    let class = "wasm.trap.unreachable_code_reached";
    sent_again(Answer::RateLimitedOnce, "/faulty/unreachable", wait, class).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_refused_with_a_500_is_sent_again() {
    // The first backoff is 2 s.
    let wait = Duration::from_millis(1900);
    sent_again(Answer::FailsOnce, "/faulty/error", wait, "plugin.error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_logged_once_and_not_retried() {
    let rollbar = Rollbar::start(Answer::Unauthorized).await;
    let mut comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &env(&rollbar, &[]),
        ..Default::default()
    });
    for _ in 0..2 {
        let response = get_response(comb.at("/faulty/panic")).await;
        assert_eq!(response.status(), 500);
    }
    eventually("both items are tried", &comb, || async {
        rollbar.received.lock().unwrap().len() >= 2
    })
    .await;
    assert!(comb.stop(), "{}", comb.log());
    assert_eq!(
        rollbar.received.lock().unwrap().len(),
        2,
        "one attempt each"
    );
    let log = comb.log();
    assert_eq!(
        log.matches("Rollbar refused an item").count(),
        1,
        "logged once:\n{log}"
    );
    assert!(log.contains("invalid access token"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollbar_that_never_answers_slows_nothing() {
    let endpoint = format!("http://{}/api/1/", silent_listener().await);
    let mut comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &[
            ("ROLLBAR_ACCESS_TOKEN", TOKEN),
            ("ROLLBAR_ENDPOINT", &endpoint),
        ],
        ..Default::default()
    });
    for _ in 0..20 {
        let failed = get_response(comb.at("/faulty/panic")).await;
        assert_eq!(failed.status(), 500);
        let ok = get_response(comb.at("/faulty/ok")).await;
        assert_eq!(ok.status(), 200);
    }
    // Shutdown waits a bounded time for the queue, then goes.
    let started = Instant::now();
    assert!(comb.stop(), "{}", comb.log());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_that_starts_serving_is_a_deploy_of_its_digest() {
    let rollbar = Rollbar::start(Answer::Accept).await;
    let comb = Comb::start(Options {
        plugins: &["faulty"],
        env: &env(&rollbar, &[("ROLLBAR_ENVIRONMENT", "staging")]),
        ..Default::default()
    });
    let digest = |file: &str| {
        let comb = &comb;
        let file = file.to_owned();
        async move {
            let report = crate::lifecycle::report(comb, &file).await?;
            report["plugin"]["digest"].as_str().map(str::to_owned)
        }
    };
    let faulty = eventually("faulty is reported", &comb, || digest("faulty.wasm")).await;
    let first = eventually("a deploy arrives", &comb, || async {
        rollbar.deploys.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(first["revision"], faulty.as_str());
    assert_eq!(first["environment"], "staging");
    assert_eq!(first["local_username"], "comb");
    assert!(
        first["comment"]
            .as_str()
            .unwrap()
            .starts_with("faulty 0.0.1 loaded"),
        "{first}"
    );
    // A plugin copied in while comb runs is a deploy too.
    crate::lifecycle::copy_in(&comb, "home_activities", "home_activities.wasm");
    let home = eventually("home_activities is reported", &comb, || {
        digest("home_activities.wasm")
    })
    .await;
    eventually("its deploy arrives", &comb, || async {
        (rollbar.deploys.lock().unwrap().iter()).any(|d| d["revision"] == home.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_error_log_line_is_a_message_item_when_asked_for() {
    let rollbar = Rollbar::start(Answer::Accept).await;
    let comb = Comb::start(Options {
        plugins: &["misbehave"],
        env: &env(&rollbar, &[("COMB_ROLLBAR_GUEST_ERRORS", "true")]),
        ..Default::default()
    });
    // Info and warn lines are not items; the error line is.
    let response = get_response(comb.at("/misbehave/log?lines=2&error=1")).await;
    assert_eq!(response.status(), 200);
    let trace = trace_id(&response);
    let item = eventually("the message item arrives", &comb, || async {
        rollbar.items().into_iter().next()
    })
    .await;
    let data = &item["data"];
    assert_eq!(data["level"], "error");
    assert_eq!(
        data["body"]["message"]["body"],
        "the ledger does not balance"
    );
    assert_eq!(data["body"]["message"]["fields"], "app.off_by=3");
    assert_eq!(data["custom"]["plugin.name"], "misbehave");
    assert_eq!(data["custom"]["trace_id"], trace.as_str());
    // Only that one: the call itself succeeded.
    assert_eq!(rollbar.items().len(), 1, "{:#?}", rollbar.items());
}
