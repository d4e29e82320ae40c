//! Health for orchestrators: liveness and readiness, on a listener of
//! their own (`--health-listen`), so a kubelet can probe comb without
//! reaching comb's page.
//!
//! - `GET /livez`: 200 while the process serves at all.
//! - `GET /readyz`: 200 once the first load is done (every file in the
//!   plugins folder at start, and every `--plugin-ref`, is serving or
//!   rejected); 503 before, and
//!   503 again from the first SIGTERM, while comb keeps serving for
//!   `--shutdown-delay-ms` so the orchestrator's endpoint removal (which
//!   lags) takes it out of rotation before it stops accepting.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};

/// What the probes report; cheap to clone and share.
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<Flags>);

#[derive(Default)]
struct Flags {
    /// Shared with the request path, which answers 503 before it is set.
    loaded: Arc<AtomicBool>,
    draining: AtomicBool,
}

impl Health {
    /// Marks the first load (folder and references) done.
    pub(crate) fn mark_loaded(&self) {
        self.0.loaded.store(true, Ordering::Relaxed);
    }

    /// The flag [`Health::mark_loaded`] sets, for the request path.
    pub(crate) fn first_load_done(&self) -> Arc<AtomicBool> {
        self.0.loaded.clone()
    }

    /// Marks shutdown begun: no longer ready, still serving.
    pub(crate) fn mark_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Ready, or why not.
    fn readiness(&self) -> Result<(), &'static str> {
        if self.0.draining.load(Ordering::Relaxed) {
            Err("draining")
        } else if !self.0.loaded.load(Ordering::Relaxed) {
            Err("loading plugins")
        } else {
            Ok(())
        }
    }
}

/// The probes' routes.
pub(crate) fn app(health: Health) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> (StatusCode, String) {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_the_first_load_and_draining() {
        let health = Health::default();
        assert_eq!(health.readiness(), Err("loading plugins"));
        health.mark_loaded();
        assert_eq!(health.readiness(), Ok(()));
        health.mark_draining();
        assert_eq!(health.readiness(), Err("draining"));
    }
}
