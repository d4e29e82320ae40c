//! Test plugin whose manifest declares far more routes than comb allows
//! one plugin.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http};

struct RouteBomb;

impl Plugin for RouteBomb {
    fn manifest() -> Manifest {
        (0..20_000).fold(Manifest::new("route_bomb", "0.0.1"), |m, i| {
            m.route("GET", &format!("/bomb/{i}/:id"))
        })
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        Ok(http::json(200, &serde_json::json!({})))
    }
}

comb_sdk::export!(RouteBomb);
