//! The benchmark's OTLP sink: accepts every export and discards it, so the
//! traced variants pay for exporting but not for a collector. Native, so
//! the sink itself takes little of the CPU comb is measured on.
//!
//! `otlp-sink ADDR` serves `POST /v1/traces` (any path) on ADDR and
//! `GET /count`: `{"requests": N, "bytes": N}` received so far.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{Json, Router, body::Bytes, extract::State, routing::get};
use serde_json::{Value, json};

#[derive(Default)]
struct Received {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn export(
    State(received): State<Arc<Received>>,
    body: Bytes,
) -> [(&'static str, &'static str); 1] {
    received.requests.fetch_add(1, Ordering::Relaxed);
    received
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    // An empty ExportTraceServiceResponse: full success.
    [("content-type", "application/x-protobuf")]
}

async fn count(State(received): State<Arc<Received>>) -> Json<Value> {
    Json(json!({
        "requests": received.requests.load(Ordering::Relaxed),
        "bytes": received.bytes.load(Ordering::Relaxed),
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let app = Router::new()
        .route("/count", get(count))
        .fallback(export)
        .with_state(Arc::<Received>::default());
    native_home::serve("127.0.0.1:4318", app).await;
}
