//! Cruddur's `UserActivities` service: a user's feed. Its timestamps have no
//! UTC offset because the original used a naive `datetime.now()`; its span
//! is `mock-data`, the name of the original's X-Ray subsegment.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time::{self, Duration};
use serde_json::json;

struct UserActivities;

impl Plugin for UserActivities {
    fn manifest() -> Manifest {
        Manifest::new("user_activities", env!("CARGO_PKG_VERSION"))
            .description("Cruddur's user feed (mock data)")
            .route("GET", "/api/activities/@:handle")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("mock-data");
        let now = time::now().naive_utc();
        span.set("app.now", time::isoformat_naive(&now));
        let handle = request.param("handle");
        let model = if cruddur::blank(handle) {
            Err("blank_user_handle")
        } else {
            let at = |offset: Duration| time::isoformat_naive(&(now + offset));
            let results = json!([{
                "uuid": "248959df-3079-4947-b847-9e0892d1bab4",
                "handle": "Andrew Brown",
                "message": "Cloud is fun!",
                "created_at": at(-Duration::days(1)),
                "expires_at": at(Duration::days(31)),
            }]);
            span.set("app.result_length", results.as_array().map_or(0, Vec::len));
            Ok(results)
        };
        Ok(cruddur::respond(&span, model))
    }
}

comb_sdk::export!(UserActivities);
