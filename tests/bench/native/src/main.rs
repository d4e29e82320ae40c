//! The benchmark's physical limit: the same home_activities JSON as the
//! plugin, built by a native axum handler on the same stack (tokio, hyper,
//! axum, serde_json) from the same `cruddur` code, without wasm and without
//! tracing.
//!
//! `native-home ADDR` serves `GET /api/activities/home` on ADDR.

use axum::{Json, Router, routing::get};
use cruddur::activities::{Activity, home as mock_home};

async fn home() -> Json<[Activity; 3]> {
    Json(mock_home(cruddur::time::now()))
}

#[tokio::main]
async fn main() {
    let app = Router::new().route("/api/activities/home", get(home));
    native_home::serve("127.0.0.1:8090", app).await;
}
