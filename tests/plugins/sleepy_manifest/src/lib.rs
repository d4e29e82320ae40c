//! Test plugin whose manifest never returns: it sleeps in a host call,
//! where no epoch deadline can interrupt it. comb must reject it at the
//! load deadline and load the others.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http};

struct SleepyManifest;

impl Plugin for SleepyManifest {
    fn manifest() -> Manifest {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Manifest::new("sleepy_manifest", "0.0.1").route("GET", "/sleepy")
    }

    fn handle(_request: Request) -> Result<Response, HandlerError> {
        Ok(http::json(200, &serde_json::json!({})))
    }
}

comb_sdk::export!(SleepyManifest);
