//! The benchmark's physical limit: the same home_activities JSON as the
//! plugin, built by a native axum handler on the same stack (tokio, hyper,
//! axum, serde_json), without wasm and without tracing.
//!
//! `native-home ADDR` serves `GET /api/activities/home` on ADDR.

use axum::{Json, Router, routing::get};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

async fn home() -> Json<Value> {
    let now = Utc::now();
    let at = |offset: Duration| cruddur::time::isoformat(&(now + offset));
    Json(json!([
        {
            "uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
            "handle": "Andrew Brown",
            "message": "Cloud is very fun!",
            "created_at": at(-Duration::days(2)),
            "expires_at": at(Duration::days(5)),
            "likes_count": 5,
            "replies_count": 1,
            "reposts_count": 0,
            "replies": [{
                "uuid": "26e12864-1c26-5c3a-9658-97a10f8fea67",
                "reply_to_activity_uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
                "handle": "Worf",
                "message": "This post has no honor!",
                "likes_count": 0,
                "replies_count": 0,
                "reposts_count": 0,
                "created_at": at(-Duration::days(2)),
            }],
        },
        {
            "uuid": "66e12864-8c26-4c3a-9658-95a10f8fea67",
            "handle": "Worf",
            "message": "I am out of prune juice",
            "created_at": at(-Duration::days(7)),
            "expires_at": at(Duration::days(9)),
            "likes": 0,
            "replies": [],
        },
        {
            "uuid": "248959df-3079-4947-b847-9e0892d1bab4",
            "handle": "Garek",
            "message": "My dear doctor, I am just simple tailor",
            "created_at": at(-Duration::hours(1)),
            "expires_at": at(Duration::hours(12)),
            "likes": 0,
            "replies": [],
        },
    ]))
}

#[tokio::main]
async fn main() {
    let app = Router::new().route("/api/activities/home", get(home));
    native_home::serve("127.0.0.1:8090", app).await;
}
