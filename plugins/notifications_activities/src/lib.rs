//! Cruddur's `NotificationsActivities` service: the notifications feed's one
//! mock activity (lower case, as the week-2 branch has it).

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use cruddur::time;

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
        let results = cruddur::activities::notifications(now);
        span.set("app.result_length", results.len());
        Ok(http::json(200, &results))
    }
}

comb_sdk::export!(NotificationsActivities);
