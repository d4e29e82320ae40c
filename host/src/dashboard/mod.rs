//! comb's own page: per-plugin latency side by side and recent traces,
//! from memory, with no account anywhere — the embedded default a first
//! run lands on.
//!
//! The [`Recorder`] is one more span processor on the SDK's provider (see
//! [`crate::telemetry`]). On the request path it only hands the ended span
//! to a bounded queue (a full queue drops and counts); a thread of its own
//! builds the traces and latency buckets in [`store`]. The admin listener
//! serves the page at `/_comb/` and its JSON at `/_comb/api/…`.

mod compare;
pub mod store;
pub(crate) mod views;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TryRecvError, sync_channel},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use http::StatusCode;
use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanProcessor},
};
use serde::{Deserialize, Serialize};

use self::store::{Capacity, PluginStats, Store};

/// Ended spans waiting for the recorder's thread; beyond this, dropped.
/// Room for well over one [`POLL`] of spans at full load.
const QUEUE: usize = 16_384;

/// How often the recorder's thread takes the queued spans.
const POLL: Duration = Duration::from_millis(25);

/// The windows the page offers, in seconds.
pub(crate) const WINDOWS: [u64; 3] = [60, 300, 900];

/// Records ended spans for the page. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<Mutex<Store>>,
    sender: SyncSender<SpanData>,
    dropped: Arc<AtomicU64>,
    /// False when OpenTelemetry is off: the page then says why it is empty.
    recording: bool,
}

impl Recorder {
    /// Starts the recorder's thread, keeping `capacity` traces.
    pub fn start(capacity: Capacity) -> Recorder {
        let store = Arc::new(Mutex::new(Store::new(capacity)));
        let (sender, receiver) = sync_channel(QUEUE);
        let aggregating = store.clone();
        std::thread::Builder::new()
            .name("comb-dashboard".into())
            .spawn(move || aggregate(receiver, &aggregating))
            .expect("spawning the dashboard thread");
        Recorder {
            store,
            sender,
            dropped: Arc::default(),
            recording: true,
        }
    }

    /// A recorder that records nothing, for when OpenTelemetry is off
    /// (`OTEL_SDK_DISABLED`): no thread, and a page that says so.
    pub fn off() -> Recorder {
        let (sender, _) = sync_channel(0);
        Recorder {
            store: Arc::new(Mutex::new(Store::new(Capacity { recent: 0, kept: 0 }))),
            sender,
            dropped: Arc::default(),
            recording: false,
        }
    }

    /// The span processor to add to the tracer provider.
    pub fn processor(&self) -> RecordingProcessor {
        RecordingProcessor {
            sender: self.sender.clone(),
            dropped: self.dropped.clone(),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // The store stays consistent even if a reader panicked.
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The page and its JSON API, for the admin listener.
    pub fn routes(self) -> Router {
        Router::new()
            .route("/_comb", get(|| async { Redirect::permanent("/_comb/") }))
            .route("/_comb/", get(page))
            .route("/_comb/api/stats", get(stats))
            .route("/_comb/api/traces", get(traces))
            .route("/_comb/api/traces/{trace_id}", get(trace))
            .with_state(self)
    }
}

/// Takes what queued up every [`POLL`]; ends when every sender is gone
/// (the provider shut down).
///
/// Polling, not a blocking `recv`: with the receiver blocked, every span's
/// send would wake this thread — a futex call and a context switch per
/// span, on the request path. Polled, a send is a push onto the queue.
fn aggregate(receiver: Receiver<SpanData>, store: &Mutex<Store>) {
    let mut batch = Vec::new();
    loop {
        std::thread::sleep(POLL);
        let disconnected = loop {
            match receiver.try_recv() {
                Ok(span) => batch.push(span),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !batch.is_empty() {
            let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
            for span in batch.drain(..) {
                store.add(span);
            }
        }
        if disconnected {
            return;
        }
    }
}

/// The [`Recorder`]'s side of the SDK: a non-blocking hand-off.
#[derive(Debug)]
pub struct RecordingProcessor {
    sender: SyncSender<SpanData>,
    dropped: Arc<AtomicU64>,
}

impl SpanProcessor for RecordingProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.sender.try_send(span).is_err() && self.dropped.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::warn!(
                "comb's page cannot keep up; dropping spans from it (export is unaffected)"
            );
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// `?window=SECONDS` (one of [`WINDOWS`], default 300).
#[derive(Deserialize)]
struct WindowQuery {
    window: Option<u64>,
}

/// `GET /_comb/api/stats` answer.
#[derive(Serialize)]
struct StatsAnswer {
    window_s: u64,
    bucket_s: u64,
    windows: &'static [u64],
    dropped_spans: u64,
    /// False when OpenTelemetry is off and nothing is recorded.
    recording: bool,
    plugins: Vec<PluginStats>,
}

async fn stats(State(recorder): State<Recorder>, Query(query): Query<WindowQuery>) -> Response {
    let window = query.window.unwrap_or(300);
    if !WINDOWS.contains(&window) {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                serde_json::json!({"error": format!("window must be one of {WINDOWS:?} seconds")}),
            ),
        )
            .into_response();
    }
    let plugins = recorder.store().stats(Duration::from_secs(window));
    Json(StatsAnswer {
        window_s: window,
        bucket_s: store::BUCKET.as_secs(),
        windows: &WINDOWS,
        dropped_spans: recorder.dropped.load(Ordering::Relaxed),
        recording: recorder.recording,
        plugins,
    })
    .into_response()
}

/// `?plugin=NAME&route=PATTERN&limit=N`.
#[derive(Deserialize)]
struct TracesQuery {
    plugin: Option<String>,
    route: Option<String>,
    limit: Option<usize>,
}

async fn traces(
    State(recorder): State<Recorder>,
    Query(query): Query<TracesQuery>,
) -> Json<serde_json::Value> {
    let blank = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let (plugin, route) = (blank(&query.plugin), blank(&query.route));
    let mut list = recorder.store().traces(plugin.as_deref(), route.as_deref());
    list.truncate(query.limit.unwrap_or(100));
    Json(serde_json::json!({ "traces": list }))
}

async fn trace(State(recorder): State<Recorder>, Path(trace_id): Path<String>) -> Response {
    // Clone the handle under the lock; build the JSON outside it.
    let found = recorder.store().trace(&trace_id);
    match found {
        Some(trace) => Json(trace.view()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no trace {trace_id} in memory")})),
        )
            .into_response(),
    }
}

/// The page: one self-contained file, no CDN, works offline.
async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
