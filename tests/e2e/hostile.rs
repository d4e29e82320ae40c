//! What a hostile client, registry or collector, or a careless operator,
//! can cost comb: each test plays one of them against the real binary and
//! checks that comb bounds it, says why, and keeps serving the rest.

use std::{
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{any, get, post},
};
use futures_util::StreamExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{
    harness::{Comb, Options, comb_binary, eventually, get_json, get_response, plugins},
    lifecycle::report,
    otlp::Receiver,
};

/// Serves `app` on a free loopback port; its `http://ADDR`.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A new client's GET of home, answered within 15 s (`when` says while
/// what, if it is not).
async fn home_within_15_s(comb: &Comb, when: &str) -> reqwest::Response {
    let home = get_response(comb.at("/api/activities/home"));
    tokio::time::timeout(Duration::from_secs(15), home)
        .await
        .unwrap_or_else(|_| panic!("a new client was not answered within 15 s {when}"))
}

/// A client that connects and sends a POST head declaring a 100 000-byte
/// body, then (in the background) one byte every 500 ms for at most 20 s;
/// what comb answered, if it did.
async fn trickling_post(address: &str) -> tokio::task::JoinHandle<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = "POST /api/activities HTTP/1.1\r\nhost: comb\r\ncontent-type: application/json\r\n\
                content-length: 100000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        let trickle = tokio::spawn(async move {
            for _ in 0..40 {
                if writer.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(25), reader.read_to_end(&mut answer));
        let _ = read.await;
        trickle.abort();
        String::from_utf8_lossy(&answer).into_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_trickling_request_bodies_are_cut_off_and_others_are_served() {
    let comb = Comb::start(Options {
        plugins: &["home_activities", "create_activity"],
        args: &["--max-connections", "8"],
        ..Options::default()
    });
    let address = comb.url.trim_start_matches("http://").to_owned();
    // More slow clients than comb keeps connections: the last wait in the
    // kernel's backlog, ahead of the normal client below.
    // One after another: the kernel's backlog is first in, first out.
    let mut slow = Vec::new();
    for _ in 0..10 {
        slow.push(trickling_post(&address).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let home = home_within_15_s(&comb, "while slow clients hold every connection").await;
    assert_eq!(home.status(), 200);
    let waited = started.elapsed();
    eprintln!("the normal client was answered after {waited:?}");
    // It waited for slots the slow clients held (they lose them once their
    // 5 s of grace are over).
    assert!(
        waited >= Duration::from_secs(2),
        "answered after {waited:?}"
    );
    // Each slow client got a 408 saying why, and its connection closed
    // (it read to the end).
    for client in slow {
        let answer = client.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
        assert!(answer.contains("below the minimum of 240"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_sends_a_request_is_closed_after_the_header_read_timeout() {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        args: &["--header-read-timeout-ms", "1000"],
        ..Options::default()
    });
    let address = comb.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The preface and empty SETTINGS, then a PING every 200 ms (each
    // answered, so the connection is never idle) and never a request.
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(0u32.to_be_bytes());
        frame.extend(payload);
        frame
    };
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(frame(0x4, 0, &[]));
    writer.write_all(&start).await.unwrap();
    let pings = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(&frame(0x6, 0, &[0; 8])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut sink)).await;
    pings.abort();
    assert!(
        closed.is_ok(),
        "comb kept an HTTP/2 connection that sent no request for 15 s"
    );
    // comb itself still answers.
    let (status, _) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200);
}

/// A registry whose manifests are endless: `/evil/endless` answers its
/// manifest with bytes that never stop, `/evil/failing` answers 500 with
/// a body that never stops (each stops after 1 GiB or 60 s, so the test
/// ends whatever comb does). Its `HOST:PORT`.
async fn endless_registry() -> String {
    fn endless() -> Body {
        let started = Instant::now();
        let chunks = futures_util::stream::iter(0..16_384).map(move |_| {
            let over = started.elapsed() > Duration::from_secs(60);
            match over {
                true => Err(std::io::Error::other("enough")),
                false => Ok::<_, std::io::Error>(Bytes::from(vec![b'{'; 64 * 1024])),
            }
        });
        Body::from_stream(chunks)
    }
    let digest = format!("sha256:{}", "ab".repeat(32));
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/evil/{name}/manifests/{tag}",
            any(
                move |axum::extract::Path((name, _)): axum::extract::Path<(String, String)>,
                      method: axum::http::Method| {
                    let digest = digest.clone();
                    async move {
                        let headers = [("docker-content-digest", digest)];
                        if method == axum::http::Method::HEAD {
                            return (StatusCode::OK, headers).into_response();
                        }
                        let status = match name.as_str() {
                            "failing" => StatusCode::INTERNAL_SERVER_ERROR,
                            _ => StatusCode::OK,
                        };
                        (status, headers, endless()).into_response()
                    }
                },
            ),
        );
    serve(app).await.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_sending_endless_bodies_costs_bounded_memory_and_fails_the_reference() {
    let registry = endless_registry().await;
    let (endless, failing) = (
        format!("{registry}/evil/endless:1"),
        format!("{registry}/evil/failing:1"),
    );
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        args: &[
            "--insecure-registry",
            &registry,
            "--plugin-ref",
            &endless,
            "--plugin-ref",
            &failing,
        ],
        // Idle is measured before the first pull, not after it failed.
        before_load: true,
        ..Options::default()
    });
    let idle = comb.rss_kib();
    let peak = std::cell::Cell::new(idle);
    let listed = eventually(
        "the endless manifest's reference is reported failed",
        &comb,
        || async {
            peak.set(peak.get().max(comb.rss_kib()));
            report(&comb, &endless)
                .await
                .filter(|listed| listed["state"] == "failed")
        },
    )
    .await;
    let mut peak = peak.get();
    let reason = listed["reason"].as_str().unwrap();
    assert!(
        reason.contains("the manifest is larger than the 4194304 bytes comb reads"),
        "{reason}"
    );
    let listed = eventually(
        "the failing reference is reported failed",
        &comb,
        || async {
            report(&comb, &failing)
                .await
                .filter(|listed| listed["state"] == "failed")
        },
    )
    .await;
    let reason = listed["reason"].as_str().unwrap();
    assert!(reason.contains("answered 500"), "{reason}");
    // Only the start of an error body is read, and quoted.
    assert!(reason.len() < 8 * 1024, "{} bytes of reason", reason.len());
    peak = peak.max(comb.rss_kib());
    eprintln!("RSS idle {idle} KiB, peak {peak} KiB");
    assert!(
        peak < idle + 64 * 1024,
        "RSS went from {idle} KiB to {peak} KiB"
    );
    let (status, _) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200, "the folder's plugins keep serving");
}

/// Runs comb with `args` and `env` to its end; what it printed.
fn comb_output(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let mut command = Command::new(comb_binary());
    command
        .args(args)
        .env_remove("COMB_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_printed_by_no_help_debug_log_or_failed_export() {
    const CANARY: &str = "CANARY-7f3a9";
    let headers = format!("x-honeycomb-team={CANARY}");
    // A collector that refuses every export, echoing the headers it got.
    let collector = serve(axum::Router::new().route(
        "/v1/traces",
        post(|headers: HeaderMap| async move {
            (
                StatusCode::UNAUTHORIZED,
                format!("unknown team key: {headers:?}"),
            )
        }),
    ))
    .await;
    let env = [
        ("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str()),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", headers.as_str()),
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", headers.as_str()),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", headers.as_str()),
        ("ROLLBAR_ACCESS_TOKEN", CANARY),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let help = comb_output(&["serve", "--help"], &env, "");
    assert!(help.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{help}");
    assert!(help.contains("OTEL_EXPORTER_OTLP_LOGS_HEADERS"), "{help}");
    assert!(!help.contains(CANARY), "--help prints a secret:\n{help}");
    // A push's password, from standard input, to a registry that is down.
    let push = comb_output(
        &[
            "push",
            plugins().wasm("home_activities").to_str().unwrap(),
            "127.0.0.1:9/comb/secret:1",
            "--insecure",
            "--username",
            "someone",
            "--password-stdin",
        ],
        &[("RUST_LOG", "debug"), ("DOCKER_CONFIG", "/nonexistent")],
        &format!("{CANARY}\n"),
    );
    assert!(!push.contains(CANARY), "comb push prints a secret:\n{push}");
    // Serving, with every log line at debug, a call traced and its export
    // refused.
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &env,
        ..Options::default()
    });
    let (status, _) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200);
    eventually("the refused export is logged", &comb, || async {
        comb.log().contains("unknown team key")
    })
    .await;
    let log = comb.log();
    assert!(!log.contains(CANARY), "comb's log holds a secret:\n{log}");
}

/// A collector that answers its first `failures` trace exports with
/// `status` and every later one with 200; each export request's body as
/// it arrived, and the spans of the accepted ones.
#[derive(Clone, Default)]
struct FlakyCollector {
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    accepted: Arc<Mutex<Vec<String>>>,
}

impl FlakyCollector {
    async fn start(status: StatusCode, failures: usize) -> (FlakyCollector, String) {
        let collector = FlakyCollector::default();
        let seen = AtomicUsize::new(0);
        let state = (collector.clone(), Arc::new(seen));
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let (collector, seen) = state.clone();
                async move {
                    collector.bodies.lock().unwrap().push(body.to_vec());
                    if seen.fetch_add(1, Ordering::SeqCst) < failures {
                        return (status, [("retry-after", "0")]).into_response();
                    }
                    let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                    let names = (request.resource_spans.iter())
                        .flat_map(|resource| &resource.scope_spans)
                        .flat_map(|scope| &scope.spans)
                        .map(|span| span.name.clone());
                    collector.accepted.lock().unwrap().extend(names);
                    StatusCode::OK.into_response()
                }
            }),
        );
        let url = serve(app).await;
        (collector, url)
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}

/// comb serving home, its spans exported to `endpoint` every 200 ms, after
/// one call of home.
async fn home_traced_to(endpoint: &str) -> Comb {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
        args: &["--trace-loads", "false"],
        ..Options::default()
    });
    let (status, _) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200);
    comb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collectors_short_outage_is_retried_and_a_refusal_is_not() {
    let (flaky, url) = FlakyCollector::start(StatusCode::SERVICE_UNAVAILABLE, 2).await;
    let comb = home_traced_to(&url).await;
    eventually("the call's spans arrive after two 503s", &comb, || async {
        let accepted = flaky.accepted.lock().unwrap().clone();
        accepted
            .iter()
            .any(|name| name == "home-activites-mock-data")
            && accepted.iter().any(|name| name.starts_with("invoke "))
            && accepted.iter().any(|name| name.starts_with("GET "))
    })
    .await;
    let bodies = flaky.bodies();
    assert!(bodies.len() >= 3, "{} export requests", bodies.len());
    assert_eq!(bodies[0], bodies[2], "the refused export was sent again");

    let (refusing, url) = FlakyCollector::start(StatusCode::BAD_REQUEST, usize::MAX).await;
    let comb = home_traced_to(&url).await;
    eventually("the refused export is logged", &comb, || async {
        comb.log().contains("400 Bad Request")
    })
    .await;
    // Time for retries, were there any: the backoffs add up to 1.5 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bodies = refusing.bodies();
    for (i, body) in bodies.iter().enumerate() {
        assert!(!bodies[..i].contains(body), "a 400 was retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_headers_beat_the_environments_on_every_exporter() {
    // Metric exports over HTTP, recorded with their headers.
    let teams = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = teams.clone();
    let metrics = serve(axum::Router::new().route(
        "/v1/metrics",
        post(move |headers: HeaderMap| {
            let recorded = recorded.clone();
            async move {
                let team = headers
                    .get("x-team")
                    .map(|v| v.to_str().unwrap().to_owned());
                recorded.lock().unwrap().push(team.unwrap_or_default());
                StatusCode::OK
            }
        }),
    ))
    .await;
    let traces = Receiver::start().await;
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        env: &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-team=from-env,x-env-only=1"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-team=from-env"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "200"),
        ],
        args: &[
            "--otlp-headers",
            "x-team=from-flag",
            "--otlp-metrics-headers",
            "x-team=from-flag",
            "--otlp-traces-endpoint",
            &traces.grpc_url,
            "--otlp-traces-protocol",
            "grpc",
            "--otlp-metrics-endpoint",
            &format!("{metrics}/v1/metrics"),
        ],
        ..Options::default()
    });
    let (status, _) = get_json(&comb.at("/api/activities/home")).await;
    assert_eq!(status, 200);
    let export = eventually("a gRPC trace export", &comb, || async {
        traces.exports().into_iter().next()
    })
    .await;
    let header = |name: &str| {
        (export.headers.iter())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(header("x-team").as_deref(), Some("from-flag"));
    assert_eq!(
        header("x-env-only"),
        None,
        "the flag's list replaces the variable's"
    );
    eventually("an HTTP metric export", &comb, || async {
        !teams.lock().unwrap().is_empty()
    })
    .await;
    assert!(
        teams.lock().unwrap().iter().all(|team| team == "from-flag"),
        "{:?}",
        teams.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_while_a_plugin_compiles() {
    // A cold cache: the 20 MB Python component compiles for seconds (a
    // minute in a debug build) while comb is asked to stop.
    let cache = tempfile::tempdir().unwrap();
    let mut comb = Comb::start(Options {
        plugins: &["home_activities_py"],
        cache_dir: Some(cache.path()),
        before_load: true,
        args: &["--shutdown-timeout-ms", "1000"],
        ..Options::default()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !comb.log().contains("first load of the plugins done"),
        "the compile was over before the signal"
    );
    assert!(comb.stop(), "comb did not exit within 10 s of SIGTERM");
}

#[test]
fn a_relative_cache_dir_is_relative_to_the_working_directory() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("plugins")).unwrap();
    std::fs::copy(
        plugins().wasm("home_activities"),
        work.path().join("plugins/home_activities.wasm"),
    )
    .unwrap();
    let output = Command::new(comb_binary())
        .args(["plugins", "--plugins", "plugins", "--cache-dir", "cache"])
        .current_dir(work.path())
        .env_remove("COMB_CONFIG")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("serving"), "{printed}");
    assert!(
        work.path().join("cache").is_dir(),
        "the cache is in the working directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_side_resources_a_component_hoards_are_bounded_per_call() {
    let comb = Comb::start(Options {
        plugins: &["proxy_hello"],
        ..Options::default()
    });
    let idle = comb.rss_kib();
    // Each call creates header fields (a kilobyte each) until it fails.
    let calls: Vec<_> = (0..16)
        .map(|_| tokio::spawn(get_json_owned(comb.at("/proxy_hello/hoard"))))
        .collect();
    let mut peak = idle;
    let mut answers = Vec::new();
    for call in calls {
        while !call.is_finished() {
            peak = peak.max(comb.rss_kib());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answers.push(call.await.unwrap());
    }
    for (status, body) in answers {
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "resource_limit", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--max-host-resources"),
            "{body}"
        );
    }
    // 1000 handles and a kilobyte of header each, 16 calls: ~30 MiB.
    assert!(
        peak < idle + 128 * 1024,
        "RSS went from {idle} KiB to {peak} KiB"
    );
    let response = get_response(comb.at("/proxy_hello/fine")).await;
    assert_eq!(response.status(), 201, "the component still serves");
}

async fn get_json_owned(url: String) -> (u16, serde_json::Value) {
    get_json(&url).await
}

/// Opens `count` connections to `address`, each sending one GET of home
/// and reading its answer, then staying open and silent (keep-alive).
async fn idle_keep_alive(address: &str, count: usize) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
            break;
        };
        let request = "GET /api/activities/home HTTP/1.1\r\nhost: comb\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            break;
        }
        // The answer's first bytes; the connection then stays idle.
        let mut buffer = [0; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await;
        streams.push(stream);
    }
    streams
}

/// comb serving home with open files limited to `soft` and `hard`, once it
/// logged `says`; then `idle` kept-alive connections, and a new client
/// that must be answered beside them (within 15 s: the header-read timeout
/// that would close idle ones is a minute).
async fn served_beside_kept_alive(open_files: (u64, u64), says: &str, idle: usize) {
    let comb = Comb::start(Options {
        plugins: &["home_activities"],
        open_files: Some(open_files),
        args: &["--header-read-timeout-ms", "60000"],
        ..Options::default()
    });
    assert!(comb.log().contains(says), "{}", comb.log());
    let address = comb.url.trim_start_matches("http://").to_owned();
    let kept = idle_keep_alive(&address, idle).await;
    assert_eq!(kept.len(), idle);
    let answered = home_within_15_s(&comb, "beside the kept-alive ones").await;
    assert_eq!(answered.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_limit_on_open_files_is_raised_at_start() {
    let says = "open files: soft limit raised from 512 to 4096";
    served_beside_kept_alive((512, 4096), says, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_idle_keep_alive_connections_make_room_for_a_new_client() {
    // 400 open files at most: each of the two listeners gets (400-256)/2.
    let says = "connections capped at 72 per listener";
    served_beside_kept_alive((400, 400), says, 100).await;
}
