//! Cruddur's `ShowActivities` service: one activity with its replies.
//!
//! The original route always failed (it called `ShowActivity`, the class is
//! `ShowActivities`); here it works, and `replies` is a list, as the
//! frontend expects, where the original's unreachable code had one object.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use cruddur::time::{self, Duration};
use serde_json::json;

struct ShowActivity;

impl Plugin for ShowActivity {
    fn manifest() -> Manifest {
        Manifest::new("show_activity", env!("CARGO_PKG_VERSION"))
            .description("One Cruddur activity with its replies (mock data)")
            .route("GET", "/api/activities/:uuid")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("show-activity-mock-data");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        span.set(
            "app.activity_uuid",
            request.param("uuid").unwrap_or_default(),
        );
        let at = |offset: Duration| time::isoformat(&(now + offset));
        let results = json!([{
            "uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
            "handle": "Andrew Brown",
            "message": "Cloud is fun!",
            "created_at": at(-Duration::days(2)),
            "expires_at": at(Duration::days(5)),
            "replies": [{
                "uuid": "26e12864-1c26-5c3a-9658-97a10f8fea67",
                "handle": "Worf",
                "message": "This post has no honor!",
                "created_at": at(-Duration::days(2)),
            }],
        }]);
        span.set("app.result_length", results.as_array().map_or(0, Vec::len));
        Ok(http::json(200, &results))
    }
}

comb_sdk::export!(ShowActivity);
