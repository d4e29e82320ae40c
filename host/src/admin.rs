//! The admin listener: what is deployed, for people and scripts; a guest
//! profile on demand; canaries promoted or aborted. Served apart from the
//! plugins' routes, on loopback by default.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use crate::{
    dashboard::Recorder,
    plugins::{
        Plugin, ProfileError, SharedReports, SharedRoutes, SourceReport,
        canary::{Canary, CanaryReport},
    },
    runtime::{GuestProfile, MAX_PROFILE_WINDOW},
};

/// A profile's window when the request names none.
const DEFAULT_PROFILE_WINDOW: Duration = Duration::from_secs(10);

/// How often a profile being taken is checked for its end.
const PROFILE_POLL: Duration = Duration::from_millis(50);

/// The admin app: comb's page at `/_comb/` with its JSON under
/// `/_comb/api/`; `GET /_comb/plugins`, which lists every plugin file
/// with its state (serving, or failed with the reason) and what serves
/// from it; and `POST /_comb/api/profile`, a plugin's guest profile.
pub(crate) fn app(reports: SharedReports, routes: SharedRoutes, recorder: Recorder) -> Router {
    Router::new()
        .route("/_comb/plugins", get(list_plugins))
        .with_state(reports)
        .merge(
            Router::new()
                .route("/_comb/api/profile", post(profile))
                .route("/_comb/api/canaries", get(list_canaries))
                .route("/_comb/api/canaries/{plugin}/promote", post(promote))
                .route("/_comb/api/canaries/{plugin}/abort", post(abort))
                .layer(axum::middleware::from_fn(same_origin_only))
                .with_state(routes),
        )
        .merge(recorder.routes())
}

/// Refuses a request a browser sent from another site's page: a POST here
/// changes what serves (promote, abort) or costs CPU (a profile), and a
/// page elsewhere could otherwise make the operator's browser send one to
/// this loopback listener. Browsers name the page's origin on every POST;
/// it must be the host the request is for. Scripts (`curl`) send none.
async fn same_origin_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .map(|(_, authority)| authority);
        if origin_host.is_none() || origin_host != host {
            let error = "a request from another site's page is refused here";
            return (StatusCode::FORBIDDEN, error).into_response();
        }
    }
    next.run(request).await
}

async fn list_plugins(State(reports): State<SharedReports>) -> Json<Vec<SourceReport>> {
    Json(reports.load().as_ref().clone())
}

/// How long a promotion waits for the folder's reload to serve the
/// canary's version as the plugin.
const PROMOTION_WAIT: Duration = Duration::from_secs(30);

/// Every plugin's canary, with its share and the calls each version
/// answered since it was attached.
async fn list_canaries(State(routes): State<SharedRoutes>) -> Json<Vec<CanaryReport>> {
    let table = routes.load();
    let reports = table
        .owners()
        .filter_map(|plugin| Some(plugin.canary()?.report(plugin)))
        .collect();
    Json(reports)
}

/// The plugin named `name` and its canary, or the answer saying why not.
fn with_canary(
    routes: &SharedRoutes,
    name: &str,
) -> Result<(Arc<Plugin>, Arc<Canary>), (StatusCode, String)> {
    let Some(plugin) = routes.load().owner(name).cloned() else {
        let error = format!("no plugin named {name:?} serves routes");
        return Err((StatusCode::NOT_FOUND, error));
    };
    match plugin.canary() {
        Some(canary) => Ok((plugin, canary)),
        None => Err((StatusCode::CONFLICT, format!("{name} has no canary"))),
    }
}

/// Promotes a plugin's canary: its file replaces the plugin's, and the
/// answer comes once the folder's reload serves it as the plugin (or
/// says it is still to come).
async fn promote(State(routes): State<SharedRoutes>, Path(name): Path<String>) -> Response {
    let (plugin, canary) = match with_canary(&routes, &name) {
        Ok(found) => found,
        Err(answer) => return answer.into_response(),
    };
    let report = canary.report(&plugin);
    let promoting = plugin.clone();
    if let Err(failed) = blocking(move || promoting.promote_canary()).await {
        return failed.into_response();
    }
    tracing::info!(plugin = %name, version = %canary.plugin.version, "canary promoted");
    let until = tokio::time::Instant::now() + PROMOTION_WAIT;
    let serving = loop {
        let digest = routes.load().owner(&name).map(|p| p.digest.clone());
        if digest.as_deref() == Some(canary.plugin.digest.as_str()) {
            break true;
        }
        if tokio::time::Instant::now() >= until {
            break false;
        }
        tokio::time::sleep(PROFILE_POLL).await;
    };
    Json(serde_json::json!({ "promoted": report, "serving": serving })).into_response()
}

/// Aborts a plugin's canary: every request goes to the plugin from now
/// on, and the canary's file is set aside as `NAME.wasm.aborted`.
async fn abort(State(routes): State<SharedRoutes>, Path(name): Path<String>) -> Response {
    let (plugin, canary) = match with_canary(&routes, &name) {
        Ok(found) => found,
        Err(answer) => return answer.into_response(),
    };
    let report = canary.report(&plugin);
    let aborting = plugin.clone();
    if let Err(failed) = blocking(move || aborting.abort_canary()).await {
        return failed.into_response();
    }
    tracing::info!(plugin = %name, version = %canary.plugin.version, "canary aborted");
    Json(serde_json::json!({ "aborted": report })).into_response()
}

/// Runs `work` (file system or CPU work) on a blocking thread; its error,
/// or its panic, as a 500 with the reason.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))),
        Err(panicked) => Err((StatusCode::INTERNAL_SERVER_ERROR, panicked.to_string())),
    }
}

/// What `POST /_comb/api/profile` is asked.
#[derive(Debug, Deserialize)]
struct ProfileRequest {
    /// The plugin, by `plugin.name`.
    plugin: String,
    /// How long to sample its calls (default 10, at most 60).
    seconds: Option<u64>,
    /// Or only its next this many calls, if they come sooner.
    calls: Option<u64>,
}

/// Samples the guest stacks of one plugin's calls for a while, then
/// answers the profile: JSON the Firefox Profiler opens (its processed
/// format), with the calls and samples it holds in headers. 404 for a
/// plugin that serves nothing, 409 while another profile of it is taken.
async fn profile(
    State(routes): State<SharedRoutes>,
    Query(request): Query<ProfileRequest>,
) -> Response {
    let Some(plugin) = routes.load().owner(&request.plugin).cloned() else {
        let error = format!("no plugin named {:?} serves routes", request.plugin);
        return (StatusCode::NOT_FOUND, error).into_response();
    };
    let window = request
        .seconds
        .map_or(DEFAULT_PROFILE_WINDOW, Duration::from_secs)
        .clamp(Duration::from_secs(1), MAX_PROFILE_WINDOW);
    let calls = request.calls.filter(|&calls| calls > 0);
    let started = tokio::task::spawn_blocking({
        let plugin = plugin.clone();
        move || plugin.start_profile(window, calls)
    })
    .await;
    let profile = match started {
        Ok(Ok(profile)) => profile,
        Ok(Err(busy @ ProfileError::Busy(_))) => {
            return (StatusCode::CONFLICT, busy.to_string()).into_response();
        }
        Ok(Err(error)) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
        Err(panicked) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, panicked.to_string()).into_response();
        }
    };
    // Ends the profile however this request ends: a client that gives up
    // takes the sampling with it.
    let taking = Taking {
        plugin: plugin.clone(),
        profile: Some(profile.clone()),
    };
    while !profile.is_over() {
        tokio::time::sleep(PROFILE_POLL).await;
    }
    plugin.end_profile(&profile);
    // Calls that joined still sample until they end, within their deadline.
    let until = tokio::time::Instant::now() + plugin.limits.deadline + Duration::from_secs(1);
    while Arc::strong_count(&profile) > 2 && tokio::time::Instant::now() < until {
        tokio::time::sleep(PROFILE_POLL).await;
    }
    drop(profile);
    let name = plugin.name.clone();
    let Some(profile) = taking.into_profile() else {
        let error = "calls in the profile outlived their deadline";
        return (StatusCode::INTERNAL_SERVER_ERROR, error).into_response();
    };
    let (calls, samples) = (profile.calls(), profile.samples());
    let json = match blocking(move || profile.finish()).await {
        Ok(json) => json,
        Err(failed) => return failed.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.profile.json\""),
            ),
            (
                header::HeaderName::from_static("comb-profile-calls"),
                calls.to_string(),
            ),
            (
                header::HeaderName::from_static("comb-profile-samples"),
                samples.to_string(),
            ),
        ],
        json,
    )
        .into_response()
}

/// A profile being taken of a plugin's calls; ends it when dropped.
struct Taking {
    plugin: Arc<Plugin>,
    profile: Option<Arc<GuestProfile>>,
}

impl Taking {
    /// The profile, when no call holds it any more.
    fn into_profile(mut self) -> Option<GuestProfile> {
        let profile = self.profile.take()?;
        self.plugin.end_profile(&profile);
        Arc::try_unwrap(profile).ok()
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        if let Some(profile) = &self.profile {
            self.plugin.end_profile(profile);
        }
    }
}
