//! Rollbar: each failed plugin call becomes a Rollbar item that names the
//! plugin, its version and digest, carries the wasm backtrace as frames and
//! links to the call's trace.
//!
//! Built from the same typed failure ([`InvokeError`]) as the span and the
//! metrics. Items leave from a bounded queue on a task of their own: a
//! request never waits on Rollbar, a Rollbar that is down, slow or
//! refusing only costs dropped (and counted) items, and a storm of
//! failures sends at most `items_per_minute` items per plugin.
//!
//! The wire format is Rollbar's item API (`POST {endpoint}item/`, header
//! `X-Rollbar-Access-Token`, a `data` object with `body.trace`); a plugin
//! loaded or replaced is a deploy (`POST {endpoint}deploy`) whose revision
//! is its digest.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    config::RollbarConfig,
    runtime::{Backtrace, GuestErrorLine, GuestErrorSink, GuestErrors, InvokeError},
    spans::PluginIdentity,
};

/// Items waiting to be sent; past it new items are dropped and counted.
const QUEUE: usize = 256;

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts per item when Rollbar answers 429, 5xx or not at all.
const ATTEMPTS: u32 = 3;

/// The longest comb waits when Rollbar says how long to back off.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long shutdown waits for queued items to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// The most bytes of plugin-written text (an error message, a log line and
/// its fields) an item carries, as comb's spans cut attribute values: a
/// plugin's `internal` error may be megabytes, and items wait in a queue.
const MAX_TEXT: usize = 8 * 1024;

/// Rollbar's own limit on an item's title.
const MAX_TITLE: usize = 255;

/// Frames an item keeps, the innermost (a stack overflow has thousands).
const MAX_FRAMES: usize = 100;

/// Plugins whose per-minute count is kept; past it, counts older than a
/// minute are forgotten (plugins are replaced under new names over time).
const MAX_WINDOWS: usize = 1024;

/// Request headers never sent to Rollbar, whatever the scrub list says.
const ALWAYS_SCRUBBED: [&str; 5] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
    "x-rollbar-access-token",
];

/// The request a failed call served, as the item shows it.
pub(crate) struct FailedRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub client_address: Option<IpAddr>,
    /// The route pattern that matched.
    pub route: String,
}

/// One failed call.
pub(crate) struct Failure<'a> {
    pub plugin: &'a PluginIdentity,
    pub error: &'a InvokeError,
    pub request: FailedRequest,
    /// The invocation span's trace and span ids, lower-case hex.
    pub trace_id: String,
    pub span_id: String,
}

/// The Rollbar reporter: a bounded queue and the task that drains it.
pub struct Rollbar {
    settings: Settings,
    queue: Mutex<Option<mpsc::Sender<Outgoing>>>,
    sender: Mutex<Option<JoinHandle<()>>>,
    windows: Mutex<HashMap<String, Window>>,
    /// Items not sent: over a plugin's rate, or the queue full.
    dropped: AtomicU64,
}

/// One request to Rollbar's API.
struct Outgoing {
    /// `item/` or `deploy`, under the endpoint.
    path: &'static str,
    body: Value,
}

struct Settings {
    environment: String,
    scrub: Vec<String>,
    trace_url: Option<String>,
    items_per_minute: u32,
    host: String,
}

/// One plugin's items in the current minute.
struct Window {
    started: Instant,
    sent: u32,
    suppressed: u64,
}

impl Rollbar {
    /// Starts the reporter when an access token is configured.
    pub(crate) fn start(config: &RollbarConfig) -> anyhow::Result<Option<Rollbar>> {
        let Some(token) = (config.access_token.as_ref())
            .map(|token| token.expose().to_owned())
            .filter(|token| !token.is_empty())
        else {
            return Ok(None);
        };
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(SEND_TIMEOUT).build()?;
        let (queue, items) = mpsc::channel(QUEUE);
        let sender = tokio::spawn(deliver(items, client, endpoint, token));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "comb".to_owned());
        tracing::info!(
            environment = %config.environment,
            "failed plugin calls are reported to Rollbar"
        );
        Ok(Some(Rollbar {
            settings: Settings {
                environment: config.environment.clone(),
                scrub: (config.scrub_headers.iter())
                    .map(|name| name.trim().to_ascii_lowercase())
                    .chain(ALWAYS_SCRUBBED.iter().map(|name| (*name).to_owned()))
                    .collect(),
                trace_url: config.trace_url.clone(),
                items_per_minute: config.items_per_minute,
                host,
            },
            queue: Mutex::new(Some(queue)),
            sender: Mutex::new(Some(sender)),
            windows: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues an item for `failure`, unless its plugin is over its rate or
    /// the queue is full (then it is counted). Never waits.
    pub(crate) fn report(&self, failure: &Failure<'_>) {
        if !self.admit(failure.plugin.name.as_str()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.send("item/", self.item(failure));
    }

    /// Records a deploy: plugin `name` at `version` now serves, its digest
    /// the revision, so Rollbar shows which build an error started with.
    pub(crate) fn deploy(&self, name: &str, version: &str, digest: &str) {
        let body = json!({
            "environment": self.settings.environment,
            "revision": digest,
            "local_username": "comb",
            "comment": format!("{name} {version} loaded by comb on {}", self.settings.host),
            "status": "succeeded",
        });
        self.send("deploy", body);
    }

    /// From now on, plugins' error-level log lines become message items, as
    /// pyrollbar's logging handler sends them.
    pub(crate) fn guest_errors(self: &Arc<Self>) -> GuestErrors {
        GuestErrors::new(self.clone())
    }

    /// Queues a message item for a plugin's error-level log line, within
    /// the plugin's rate.
    fn message(&self, line: &GuestErrorLine) {
        if !self.admit(&line.plugin) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let body = json!({
            "data": {
                "environment": self.settings.environment,
                "level": "error",
                "timestamp": unix_seconds(),
                "platform": "linux",
                "language": "webassembly",
                "framework": "comb",
                "uuid": uuid::Uuid::new_v4().to_string(),
                "title": cut(&format!("{}: {}", line.plugin, line.message), MAX_TITLE),
                "body": { "message": {
                    "body": cut(&line.message, MAX_TEXT),
                    "fields": cut(&line.fields, MAX_TEXT),
                } },
                "server": { "host": self.settings.host },
                "notifier": { "name": "comb", "version": env!("CARGO_PKG_VERSION") },
                "custom": {
                    "plugin.name": line.plugin,
                    "trace_id": line.trace_id,
                    "span_id": line.span_id,
                    "trace_url": self.trace_url(&line.trace_id),
                },
            }
        });
        self.send("item/", body);
    }

    /// The link to trace `trace_id`, when a template is configured.
    fn trace_url(&self, trace_id: &str) -> Option<String> {
        (self.settings.trace_url.as_ref()).map(|template| template.replace("{trace_id}", trace_id))
    }

    /// Queues a request, or counts it dropped when the queue is full.
    fn send(&self, path: &'static str, body: Value) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let queued = (queue.as_ref()).is_some_and(|q| q.try_send(Outgoing { path, body }).is_ok());
        if !queued && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!("Rollbar's queue is full; items are dropped and counted");
        }
    }

    /// Items not sent so far (over a rate, or the queue full).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is queued, for at most [`FLUSH_TIMEOUT`].
    pub(crate) async fn shutdown(&self) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(sender) = sender
            && tokio::time::timeout(FLUSH_TIMEOUT, sender).await.is_err()
        {
            tracing::warn!("Rollbar items still queued at shutdown were not sent");
        }
        let dropped = self.dropped();
        if dropped > 0 {
            tracing::info!(
                dropped,
                "Rollbar items not sent (rate per plugin, full queue)"
            );
        }
    }

    /// Whether `plugin` may send one more item this minute; the first item
    /// it may not send is logged, once per minute.
    fn admit(&self, plugin: &str) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_WINDOWS && !windows.contains_key(plugin) {
            let minute = Duration::from_secs(60);
            windows.retain(|_, window| window.started.elapsed() < minute);
            if windows.len() >= MAX_WINDOWS {
                windows.clear();
            }
        }
        let window = windows.entry(plugin.to_owned()).or_insert(Window {
            started: Instant::now(),
            sent: 0,
            suppressed: 0,
        });
        if window.started.elapsed() >= Duration::from_secs(60) {
            if window.suppressed > 0 {
                tracing::info!(
                    plugin,
                    suppressed = window.suppressed,
                    "Rollbar items over the per-plugin rate were counted, not sent"
                );
            }
            *window = Window {
                started: Instant::now(),
                sent: 0,
                suppressed: 0,
            };
        }
        if window.sent < self.settings.items_per_minute {
            window.sent += 1;
            return true;
        }
        if window.suppressed == 0 {
            tracing::warn!(
                plugin,
                limit = self.settings.items_per_minute,
                "failures over the per-plugin Rollbar rate this minute are counted, not sent"
            );
        }
        window.suppressed += 1;
        false
    }

    /// The item, in Rollbar's format.
    fn item(&self, failure: &Failure<'_>) -> Value {
        let Failure {
            plugin,
            error,
            request,
            trace_id,
            span_id,
        } = failure;
        let error_type = error.error_type();
        let message = cut(&error.message(), MAX_TEXT);
        let frames = error.backtrace().map(frames).unwrap_or_default();
        // A panic is summed up by its own message, not its header.
        let panic = error.panic();
        let summary = panic.map_or_else(
            || message.lines().next().unwrap_or_default(),
            |panic| panic.message,
        );
        let mut custom = Map::new();
        custom.insert("trace_id".into(), json!(trace_id));
        custom.insert("span_id".into(), json!(span_id));
        custom.insert("plugin.name".into(), json!(plugin.name.as_str()));
        custom.insert("plugin.version".into(), json!(plugin.version.as_str()));
        custom.insert("plugin.digest".into(), json!(plugin.digest.as_str()));
        custom.insert("http.route".into(), json!(request.route));
        if let Some(url) = self.trace_url(trace_id) {
            custom.insert("trace_url".into(), json!(url));
        }
        let headers: Map<String, Value> = (request.headers.iter())
            .filter(|(name, _)| !self.settings.scrub.iter().any(|s| s == name.as_str()))
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), json!(value))
            })
            .collect();
        let host = (request.headers.get(http::header::HOST))
            .and_then(|host| host.to_str().ok())
            .unwrap_or("localhost");
        json!({
            "data": {
                "environment": self.settings.environment,
                "level": level(error),
                "timestamp": unix_seconds(),
                "code_version": format!("{}+{}", plugin.version.as_str(), &plugin.digest.as_str()[..12.min(plugin.digest.as_str().len())]),
                "platform": "linux",
                "language": "webassembly",
                "framework": "comb",
                "context": format!("{} {}", request.method, request.route),
                "uuid": uuid::Uuid::new_v4().to_string(),
                "fingerprint": fingerprint(plugin.name.as_str(), error_type, panic.map(|panic| panic.location), &frames),
                "title": cut(&format!("{}: {error_type}: {summary}", plugin.name.as_str()), MAX_TITLE),
                "body": {
                    "trace": {
                        "frames": frames,
                        "exception": {
                            "class": error_type,
                            "message": message,
                        },
                    },
                },
                "request": {
                    "url": format!("http://{host}{}", request.uri.path_and_query().map_or("/", |p| p.as_str())),
                    "method": request.method.as_str(),
                    "headers": headers,
                    "query_string": request.uri.query().unwrap_or_default(),
                    "user_ip": request.client_address.map(|ip| ip.to_string()),
                },
                "server": { "host": self.settings.host },
                "notifier": { "name": "comb", "version": env!("CARGO_PKG_VERSION") },
                "custom": custom,
            }
        })
    }
}

fn unix_seconds() -> u64 {
    (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH))
        .unwrap_or_default()
        .as_secs()
}

/// Within the plugin's rate, then into the bounded item queue: never waits.
impl GuestErrorSink for Rollbar {
    fn report(&self, line: GuestErrorLine) {
        self.message(&line);
    }
}

/// `warning` for what comb refused or cut short (the plugin may be fine),
/// `error` for the rest.
fn level(error: &InvokeError) -> &'static str {
    match error {
        InvokeError::Deadline { .. } | InvokeError::Overloaded => "warning",
        _ => "error",
    }
}

/// Items group by plugin, `error.type` and where it happened: the panic's
/// location when there is one, else the innermost frame of the plugin's
/// own code. Never by message, which may hold request data.
fn fingerprint(
    plugin: &str,
    error_type: &str,
    panic_location: Option<&str>,
    frames: &[Value],
) -> String {
    let top = panic_location.or_else(|| {
        // Frames are oldest first: the innermost is last.
        (frames.iter().rev())
            .filter_map(|frame| frame["method"].as_str())
            .find(|method| !is_runtime_frame(method))
    });
    let mut hash = Sha256::new();
    for part in [plugin, error_type, top.unwrap_or_default()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..16])
}

/// Frames of the Rust runtime rather than the plugin's code (crate names
/// may carry a hash: `core[6d9e…]::panicking`).
fn is_runtime_frame(method: &str) -> bool {
    let krate = method.split(['[', ':']).next().unwrap_or_default();
    matches!(krate, "std" | "core" | "alloc" | "__rustc" | "abort")
        || method.starts_with("__rust")
        || method.starts_with("<unknown>")
        || method.starts_with("<wasm function")
}

/// A backtrace as Rollbar frames, oldest call first: the module stands in
/// for the file where the frame has no source location.
fn frames(backtrace: &Backtrace) -> Vec<Value> {
    // Innermost first in the backtrace; Rollbar wants the innermost last.
    // Past MAX_FRAMES the outermost go: where it failed is what counts.
    (backtrace.frames.iter().take(MAX_FRAMES).rev())
        .map(|frame| {
            let mut item = json!({
                "filename": frame.file.as_deref().or(frame.module.as_deref()).unwrap_or("<wasm>"),
                "method": frame.function,
            });
            if let Some(line) = frame.line {
                item["lineno"] = json!(line);
            }
            if let Some(column) = frame.column {
                item["colno"] = json!(column);
            }
            item
        })
        .collect()
}

/// `text` cut to at most `max` bytes at a character boundary, marked `…`
/// when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(max.saturating_sub('…'.len_utf8()));
    format!("{}…", &text[..end])
}

/// Sends queued items one by one until the queue closes.
async fn deliver(
    mut items: mpsc::Receiver<Outgoing>,
    client: reqwest::Client,
    endpoint: String,
    token: String,
) {
    let mut refused_logged = false;
    while let Some(Outgoing { path, body }) = items.recv().await {
        let url = format!("{endpoint}/{path}");
        let body = body.to_string();
        for attempt in 1..=ATTEMPTS {
            let sent = client
                .post(&url)
                .header("x-rollbar-access-token", &token)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let backoff = match sent {
                Ok(response) if response.status().is_success() => break,
                Ok(response) if response.status() == http::StatusCode::TOO_MANY_REQUESTS => {
                    // Rollbar says how long until its rate window resets.
                    (response.headers().get("x-rate-limit-remaining-seconds"))
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map_or(Duration::from_secs(1), Duration::from_secs)
                        .min(MAX_BACKOFF)
                }
                Ok(response) if response.status().is_server_error() => {
                    Duration::from_secs(1 << attempt)
                }
                Ok(response) => {
                    // 401, 403, 422...: retrying will not help.
                    if !refused_logged {
                        refused_logged = true;
                        let status = response.status();
                        let text = response.text().await.unwrap_or_default();
                        tracing::warn!(%status, "Rollbar refused an item: {}", text.chars().take(200).collect::<String>());
                    }
                    break;
                }
                Err(error) => {
                    if attempt == 1 {
                        tracing::debug!("sending to Rollbar: {error}");
                    }
                    Duration::from_secs(1 << attempt)
                }
            };
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Frame;

    fn frame(module: &str, function: &str, at: Option<(&str, u32, u32)>) -> Frame {
        Frame {
            module: Some(module.to_owned()),
            function: function.to_owned(),
            offset: Some(0x1a2b),
            file: at.map(|(file, _, _)| file.to_owned()),
            line: at.map(|(_, line, _)| line),
            column: at.map(|(_, _, column)| column),
        }
    }

    /// As wasmtime captures it (innermost first), for a plugin built with
    /// line tables.
    fn backtrace() -> Backtrace {
        Backtrace {
            frames: vec![
                frame("p.wasm", "abort", None),
                frame(
                    "p.wasm",
                    "std[d123b7a1a2ed1472]::panicking::panic_with_hook",
                    None,
                ),
                frame("p.wasm", "p::handle::h0123", Some(("src/lib.rs", 45, 9))),
                frame("<unknown>", "<wasm function 12>", None),
            ],
        }
    }

    #[test]
    fn a_backtrace_becomes_frames_oldest_first() {
        let frames = frames(&backtrace());
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0]["method"], "<wasm function 12>");
        assert_eq!(frames[1]["method"], "p::handle::h0123");
        assert_eq!(frames[1]["filename"], "src/lib.rs");
        assert_eq!(frames[1]["lineno"], 45);
        assert_eq!(frames[1]["colno"], 9);
        assert_eq!(frames[3]["method"], "abort");
        assert_eq!(frames[3]["filename"], "p.wasm");
        assert!(is_runtime_frame(
            "std[d123b7a1a2ed1472]::panicking::panic_with_hook"
        ));
        assert!(!is_runtime_frame("p::handle::h0123"));
    }

    #[test]
    fn what_a_plugin_writes_is_cut_and_frames_are_capped() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(10_000);
        let kept = cut(&long, MAX_TEXT);
        assert!(
            kept.len() <= MAX_TEXT && kept.ends_with('…'),
            "{}",
            kept.len()
        );
        let deep = Backtrace {
            frames: (0..5000)
                .map(|i| frame("p.wasm", &format!("recurse{i}"), None))
                .collect(),
        };
        let frames = frames(&deep);
        assert_eq!(frames.len(), MAX_FRAMES);
        // The innermost frame (0) is kept, last.
        assert_eq!(frames[MAX_FRAMES - 1]["method"], "recurse0");
    }

    #[tokio::test]
    async fn an_item_carries_at_most_so_much_of_a_plugins_text() {
        let config = RollbarConfig {
            access_token: Some("t".into()),
            environment: "test".into(),
            endpoint: "http://127.0.0.1:9/api/1/".into(),
            items_per_minute: 60,
            scrub_headers: vec![],
            guest_errors: false,
            trace_url: None,
        };
        let rollbar = Rollbar::start(&config).unwrap().unwrap();
        let huge = "x".repeat(4 << 20);
        let item = rollbar.item(&Failure {
            plugin: &PluginIdentity::new("p", "1.0.0", &"ab".repeat(32)),
            error: &InvokeError::Guest(crate::runtime::HandlerError::Internal(huge)),
            request: FailedRequest {
                method: Method::GET,
                uri: "/x".parse().unwrap(),
                headers: HeaderMap::new(),
                client_address: None,
                route: "/x".into(),
            },
            trace_id: "0".repeat(32),
            span_id: "0".repeat(16),
        });
        let data = &item["data"];
        assert!(data["title"].as_str().unwrap().len() <= MAX_TITLE);
        let message = data["body"]["trace"]["exception"]["message"]
            .as_str()
            .unwrap();
        assert!(message.len() <= MAX_TEXT, "{}", message.len());
        assert!(item.to_string().len() < 4 * MAX_TEXT);
    }

    #[test]
    fn items_group_by_plugin_type_and_place_never_by_message() {
        let frames = frames(&backtrace());
        let a = fingerprint("p", "wasm.trap.unreachable_code_reached", None, &frames);
        let other = fingerprint("q", "wasm.trap.unreachable_code_reached", None, &frames);
        assert_ne!(a, other);
        let panic = |at: &str| fingerprint("p", "wasm.panic", Some(at), &frames);
        assert_eq!(panic("src/lib.rs:20:5"), panic("src/lib.rs:20:5"));
        assert_ne!(panic("src/lib.rs:20:5"), panic("src/lib.rs:30:5"));
    }
}
