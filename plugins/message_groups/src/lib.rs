//! Cruddur's `MessageGroups` service: the current user's two conversations.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time;
use serde_json::json;

struct MessageGroups;

impl Plugin for MessageGroups {
    fn manifest() -> Manifest {
        Manifest::new("message_groups", env!("CARGO_PKG_VERSION"))
            .description("Cruddur's message groups (mock data)")
            .route("GET", "/api/message_groups")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("message-groups-mock-data");
        let now = time::isoformat(&time::now());
        span.set("app.now", now.as_str());
        let results = json!([
            {
                "uuid": "24b95582-9e7b-4e0a-9ad1-639773ab7552",
                "display_name": "Andrew Brown",
                "handle": "andrewbrown",
                "created_at": now,
            },
            {
                "uuid": "417c360e-c4e6-4fce-873b-d2d71469b4ac",
                "display_name": "Worf",
                "handle": "worf",
                "created_at": now,
            },
        ]);
        span.set("app.result_length", results.as_array().map_or(0, Vec::len));
        Ok(cruddur::respond(&span, Ok(results)))
    }
}

comb_sdk::export!(MessageGroups);
