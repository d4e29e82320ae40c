//! Cruddur's `HomeActivities` service as a comb plugin: the home feed's three
//! mock activities, traced as the original traced them.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use cruddur::time::{self, Duration};
use serde_json::json;

struct HomeActivities;

impl Plugin for HomeActivities {
    fn manifest() -> Manifest {
        Manifest::new("home_activities", env!("CARGO_PKG_VERSION"))
            .description("Cruddur's home feed (mock data)")
            .route("GET", "/api/activities/home")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        // The span name's typo is the original's; Honeycomb queries match it.
        let span = Span::start("home-activites-mock-data");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let at = |offset: Duration| time::isoformat(&(now + offset));
        let results = json!([
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
        ]);
        span.set("app.result_length", results.as_array().map_or(0, Vec::len));
        Ok(http::json(200, &results))
    }
}

comb_sdk::export!(HomeActivities);
