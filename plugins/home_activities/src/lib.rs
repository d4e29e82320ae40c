//! Cruddur's `HomeActivities` service as a comb plugin: the home feed's three
//! mock activities, traced as the original traced them.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};
use cruddur::time;

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
        let results = cruddur::activities::home(now);
        span.set("app.result_length", results.len());
        Ok(http::json(200, &results))
    }
}

comb_sdk::export!(HomeActivities);
