//! Test plugin whose manifest declares a route pattern comb must refuse.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http};

struct BadManifest;

impl Plugin for BadManifest {
    fn manifest() -> Manifest {
        Manifest::new("bad_manifest", "0.0.1").route("GET", "no-leading-slash")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        Ok(http::json(200, &serde_json::json!({})))
    }
}

comb_sdk::export!(BadManifest);
