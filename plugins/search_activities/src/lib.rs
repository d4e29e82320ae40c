//! Cruddur's `SearchActivities` service: any non-blank `term` finds the
//! same one activity (the mock does not filter).

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time;
use serde_json::json;

struct SearchActivities;

impl Plugin for SearchActivities {
    fn manifest() -> Manifest {
        Manifest::new("search_activities", env!("CARGO_PKG_VERSION"))
            .description("Cruddur's activity search (mock data)")
            .route("GET", "/api/activities/search")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("search-activities-mock-data");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let term = request.query_param("term");
        let model = if cruddur::blank(term.as_deref()) {
            Err("search_term_blank")
        } else {
            let results = json!([{
                "uuid": "248959df-3079-4947-b847-9e0892d1bab4",
                "handle": "Andrew Brown",
                "message": "Cloud is fun!",
                "created_at": time::isoformat(&now),
            }]);
            span.set("app.result_length", results.as_array().map_or(0, Vec::len));
            Ok(results)
        };
        Ok(cruddur::respond(&span, model))
    }
}

comb_sdk::export!(SearchActivities);
