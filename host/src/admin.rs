//! The admin listener: what is deployed, for people and scripts. Served
//! apart from the plugins' routes, on loopback by default.

use axum::{Json, Router, extract::State, routing::get};

use crate::{
    dashboard::Recorder,
    plugins::{SharedReports, SourceReport},
};

/// The admin app: comb's page at `/_comb/` with its JSON under
/// `/_comb/api/`, and `GET /_comb/plugins`, which lists every plugin file
/// with its state (serving, or failed with the reason) and what serves
/// from it.
pub(crate) fn app(reports: SharedReports, recorder: Recorder) -> Router {
    Router::new()
        .route("/_comb/plugins", get(list_plugins))
        .with_state(reports)
        .merge(recorder.routes())
}

async fn list_plugins(State(reports): State<SharedReports>) -> Json<Vec<SourceReport>> {
    Json(reports.load().as_ref().clone())
}
