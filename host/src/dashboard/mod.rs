//! comb's own page: per-plugin latency side by side and recent traces,
//! from memory, with no account anywhere — the embedded default a first
//! run lands on.
//!
//! The [`Recorder`] sees every sampled span comb's span pipeline takes
//! (see [`crate::telemetry`]), on the pipeline's thread, shared with the
//! export queue rather than copied, and builds the traces and latency
//! buckets in [`store`]. The admin listener serves the page at `/_comb/`
//! and its JSON at `/_comb/api/…`.

mod compare;
pub mod store;
pub(crate) mod views;

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
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
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};

use self::store::{Capacity, PluginStats, Store};

/// The windows the page offers, in seconds.
pub(crate) const WINDOWS: [u64; 3] = [60, 300, 900];

/// Records ended spans for the page. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    store: Arc<Mutex<Store>>,
    /// Spans the pipeline dropped before the page saw them.
    dropped: Arc<AtomicU64>,
    /// False when OpenTelemetry is off: the page then says why it is empty.
    recording: bool,
}

impl Recorder {
    /// A recorder keeping `capacity` traces.
    pub fn start(capacity: Capacity) -> Recorder {
        Recorder {
            store: Arc::new(Mutex::new(Store::new(capacity))),
            dropped: Arc::default(),
            recording: true,
        }
    }

    /// A recorder that records nothing, for when OpenTelemetry is off
    /// (`OTEL_SDK_DISABLED`): a page that says so.
    pub fn off() -> Recorder {
        Recorder {
            store: Arc::new(Mutex::new(Store::new(Capacity { recent: 0, kept: 0 }))),
            dropped: Arc::default(),
            recording: false,
        }
    }

    /// Adds ended spans, in the order they ended.
    pub(crate) fn record<'a>(&self, spans: impl Iterator<Item = &'a Arc<SpanData>>) {
        let mut store = self.store();
        for span in spans {
            store.add(span.clone());
        }
    }

    /// Where the span pipeline counts the spans it dropped before the page
    /// saw them (it fell a whole queue behind).
    pub(crate) fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
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
