//! Cruddur's `NotificationsActivities` service: the notifications feed's one
//! mock activity (lower case, as the week-2 branch has it).

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use cruddur::time::{self, Duration};
use serde_json::json;

struct NotificationsActivities;

impl Plugin for NotificationsActivities {
    fn manifest() -> Manifest {
        Manifest::new("notifications_activities", env!("CARGO_PKG_VERSION"))
            .description("Cruddur's notifications feed (mock data)")
            .route("GET", "/api/activities/notifications")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("notifications-activities-mock-data");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let at = |offset: Duration| time::isoformat(&(now + offset));
        let results = json!([{
            "uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
            "handle": "coco",
            "message": "I am white unicorn",
            "created_at": at(-Duration::days(2)),
            "expires_at": at(Duration::days(5)),
            "likes_count": 5,
            "replies_count": 1,
            "reposts_count": 0,
            "replies": [{
                "uuid": "26e12864-1c26-5c3a-9658-97a10f8fea67",
                "reply_to_activity_uuid": "68f126b0-1ceb-4a33-88be-d90fa7109eee",
                "handle": "worf",
                "message": "this post has no honor!",
                "likes_count": 0,
                "replies_count": 0,
                "reposts_count": 0,
                "created_at": at(-Duration::days(2)),
            }],
        }]);
        span.set("app.result_length", results.as_array().map_or(0, Vec::len));
        Ok(http::json(200, &results))
    }
}

comb_sdk::export!(NotificationsActivities);
