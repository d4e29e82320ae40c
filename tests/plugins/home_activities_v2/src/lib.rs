//! Test plugin: a second build of home_activities (same name and route,
//! another version and body), to replace the first while it serves.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http};

struct HomeActivitiesV2;

impl Plugin for HomeActivitiesV2 {
    fn manifest() -> Manifest {
        Manifest::new("home_activities", "0.2.0").route("GET", "/api/activities/home")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        Ok(http::json(200, &serde_json::json!({"version": 2})))
    }
}

comb_sdk::export!(HomeActivitiesV2);
