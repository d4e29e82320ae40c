//! The request path: match the route, run the plugin, answer — each request
//! wrapped in a server span, each plugin call in an invocation span.
//!
//! Beside it: `framing.rs` turns a plugin's answer into a response comb
//! frames, `report.rs` reports failed calls to Rollbar from a layer, and
//! `run.rs` wires the listeners, the lifecycle and shutdown at start.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header, request::Parts};
use opentelemetry::{Context, StringValue, global::BoxedTracer, trace::TraceContextExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use self::run::run;
use crate::{
    connections::{BodyTimeout, Peer},
    error::ApiError,
    metrics::{AnsweredRequest, Metrics, Usage},
    plugins::{Lookup, Plugin, SharedRoutes, invocation},
    rollbar::Rollbar,
    runtime::{InvokeError, RoutedRequest, Runtime},
    spans::{self, IncomingRequest},
};

mod framing;
mod report;
mod run;

/// The log target of the one-line-per-request access log.
pub(crate) const ACCESS_LOG: &str = "comb::access";

/// The W3C Trace Context Level 2 response header naming the server span.
const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// What every request handler shares.
pub struct AppState {
    /// The current route table; swapped whole when plugins change.
    pub routes: SharedRoutes,
    /// The wasmtime engine and linker.
    pub runtime: Arc<Runtime>,
    /// The tracer for server and invocation spans; `None` when
    /// OpenTelemetry is off (`OTEL_SDK_DISABLED`), so none is built.
    pub tracer: Option<BoxedTracer>,
    /// Origins allowed by CORS; none means no CORS headers at all.
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// comb's instruments.
    pub metrics: Metrics,
    /// Where failed calls are reported, when Rollbar is configured.
    pub rollbar: Option<Arc<Rollbar>>,
    /// Whether the first load of the plugins is done. Before, a path no
    /// route serves answers 503 `loading`, not 404: comb listens at once,
    /// and the plugin that serves it may still be compiling.
    pub loaded: Arc<AtomicBool>,
}

/// The HTTP app: every path goes through the plugin route table, behind
/// Rollbar's reporter when it is on, and CORS when origins are configured.
pub fn app(state: Arc<AppState>) -> Router {
    let cors = cors(&state.cors_allowed_origins);
    let rollbar = state.rollbar.clone();
    let mut router = Router::new().fallback(serve_request).with_state(state);
    if let Some(rollbar) = rollbar {
        router = router.layer(axum::middleware::from_fn_with_state(
            rollbar,
            report::report_failures,
        ));
    }
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS as the Cruddur backend configured flask-cors: its methods, allowed
/// and exposed headers; plus `traceresponse`, so a browser app can show
/// which trace a request made. Preflights are answered here, before any
/// plugin runs.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::OPTIONS, Method::GET, Method::HEAD, Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::IF_MODIFIED_SINCE])
            .expose_headers([header::LOCATION, header::LINK, TRACERESPONSE]),
    )
}

async fn serve_request(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let client = parts
        .extensions
        .get::<ConnectInfo<Peer>>()
        .map(|info| &info.0);
    // A full Arc, not a guard: the table must outlive a long plugin call
    // without pinning arc-swap's fast-path slots.
    let table = state.routes.load_full();
    let lookup = table.lookup(&parts.method, parts.uri.path());
    // Which version serves: the route's plugin, or its canary.
    let served = match &lookup {
        Lookup::Found { route, .. } => Some(route.target.serving(&parts.headers)),
        _ => None,
    };
    // Borrowed from the table (or the version), which outlive the request.
    let (route, identity) = match (&lookup, &served) {
        (Lookup::Found { route, .. }, Some(served)) => {
            (Some(route.pattern.shared()), Some(served.plugin.identity()))
        }
        (Lookup::MethodNotAllowed { pattern, .. }, _) => (Some(pattern.shared()), None),
        _ => (None, None),
    };
    let plugin = identity.map(|identity| &identity.name);
    let server_cx = spans::start_server_span(
        state.tracer.as_ref(),
        &spans::extract(&parts.headers),
        &IncomingRequest {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            client_address: client.map(|peer| &peer.ip),
            route,
            plugin,
        },
    );
    let method = parts.method.clone();
    let (mut response, error_type) = match lookup {
        Lookup::NotFound if !state.loaded.load(Ordering::Relaxed) => (
            ApiError::loading(&parts.method, parts.uri.path()).into_response(),
            None,
        ),
        Lookup::NotFound => (
            ApiError::not_found(&parts.method, parts.uri.path()).into_response(),
            None,
        ),
        Lookup::MethodNotAllowed { allowed, .. } => (
            ApiError::method_not_allowed(&parts.method, parts.uri.path(), &allowed).into_response(),
            None,
        ),
        Lookup::Found { route, params } => {
            let served = served.as_ref().expect("chosen for a found route");
            let routed = (route.pattern.shared(), params);
            let answered =
                call_plugin(&state, &server_cx, &served.plugin, routed, parts, body).await;
            served.record(&route.target, answered.0.status().is_server_error());
            answered
        }
    };
    spans::end_server_span(&server_cx, response.status(), error_type);
    state.metrics.record_request(&AnsweredRequest {
        method: &method,
        route,
        plugin: identity,
        status: response.status(),
        error_type,
        duration: started.elapsed(),
    });
    // W3C Trace Context's `traceresponse`: the caller learns which trace to
    // look up, as X-Ray's middleware answers `X-Amzn-Trace-Id`.
    if let Some(value) = spans::traceresponse(&server_cx) {
        response.headers_mut().insert(TRACERESPONSE, value);
    }
    // The access log, on its own target so it can be turned on or off:
    // on by default only when traces are not exported (then it is where a
    // first run shows something).
    tracing::info!(
        target: ACCESS_LOG,
        trace_id = %spans::trace_id(&server_cx),
        route = route.map_or("-", |route| &**route),
        plugin = plugin.map_or("-", StringValue::as_str),
        status = response.status().as_u16(),
        duration_ms = format_args!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}

/// Reads the body, runs the plugin inside its invocation span and turns
/// the outcome into a response plus, for a failure, its `error.type`. A
/// failed call's response carries it as a [`FailedCall`], which the
/// reporting layer (`report.rs`) reads: the request path reports nothing.
async fn call_plugin(
    state: &AppState,
    server_cx: &Context,
    plugin: &Arc<Plugin>,
    (route, params): (&Arc<str>, Vec<(String, String)>),
    parts: Parts,
    body: Body,
) -> (Response, Option<&'static str>) {
    let limits = &plugin.limits;
    let body = match read_body(&parts, body, limits.max_request_body).await {
        Ok(body) => body,
        Err(error) => {
            let limit = match error.status() {
                StatusCode::PAYLOAD_TOO_LARGE => Some("request_body"),
                StatusCode::REQUEST_TIMEOUT => Some("request_body_time"),
                _ => None,
            };
            spans::record_limit_hit(server_cx, limit);
            return (error.into_response(), None);
        }
    };
    // Refuse rather than queue: a queue without bound is how one slow
    // plugin takes the host's memory down.
    let Some(slot) = plugin.try_slot() else {
        let failure = InvokeError::Overloaded;
        spans::record_limit_hit(server_cx, failure.limit_hit());
        return failed(plugin, route, failure, server_cx);
    };
    let request = RoutedRequest {
        http: http::Request::from_parts(parts, body),
        route: route.to_string(),
        params,
    };
    let coldstart = plugin.take_coldstart();
    let invocation_cx = invocation::start_invocation_span(
        state.tracer.as_ref(),
        server_cx,
        plugin.identity(),
        limits,
        coldstart,
    );
    let (result, timings) = plugin
        .invoke(&state.runtime, slot, request, invocation_cx.clone())
        .await;
    invocation::end_invocation_span(&invocation_cx, &timings, result.as_ref().err());
    state.metrics.record_invocation(
        plugin.identity(),
        coldstart,
        &Usage {
            instantiate: timings.instantiate,
            total: timings.instantiate + timings.call,
            guest_cpu: timings.guest_cpu,
            memory_peak: timings.memory_peak,
        },
        result.as_ref().err().map(InvokeError::error_type),
    );
    let answer = result.and_then(|response| {
        if response.body_len() > limits.max_response_body {
            return Err(InvokeError::ResponseTooLarge {
                limit: limits.max_response_body,
            });
        }
        framing::into_http(response).map_err(InvokeError::from)
    });
    match answer {
        Ok(response) => (response, None),
        Err(failure) => {
            // Limits checked here, after the call, go on the server span;
            // the invocation span has those of the call itself.
            if let InvokeError::ResponseTooLarge { .. } = failure {
                spans::record_limit_hit(server_cx, failure.limit_hit());
            }
            if !matches!(failure, InvokeError::Guest(_)) {
                tracing::warn!(plugin = %plugin.name, "plugin call failed: {failure}");
            }
            failed(plugin, route, failure, &invocation_cx)
        }
    }
}

/// The answer to a failed call, carrying the failure as a [`FailedCall`]
/// for whoever reports failures; `cx` holds the span a report links to.
fn failed(
    plugin: &Arc<Plugin>,
    route: &Arc<str>,
    failure: InvokeError,
    cx: &Context,
) -> (Response, Option<&'static str>) {
    let error_type = failure.error_type();
    let mut response = ApiError::from_invoke(&plugin.name, &failure).into_response();
    response.extensions_mut().insert(FailedCall {
        plugin: plugin.clone(),
        route: route.clone(),
        error: Arc::new(failure),
        span: cx.span().span_context().clone(),
    });
    (response, Some(error_type))
}

/// A failed plugin call, as its answer carries it to the layers around
/// the request path (Rollbar's reporter).
#[derive(Clone)]
pub(crate) struct FailedCall {
    /// The plugin called.
    pub plugin: Arc<Plugin>,
    /// The route pattern that matched.
    pub route: Arc<str>,
    /// Why the call failed.
    pub error: Arc<InvokeError>,
    /// The span a report links to: the invocation's, or the server's when
    /// the call never started.
    pub span: opentelemetry::trace::SpanContext,
}

async fn read_body(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // Refuse a declared oversized body before reading a byte of it.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::body_too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            return ApiError::body_too_large(limit);
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(error) = cause {
            if let Some(timeout) = error.downcast_ref::<BodyTimeout>() {
                // HTTP/1 has no other way to stop the rest of the body than
                // closing the connection; an HTTP/2 stream is reset.
                return ApiError::body_timeout(timeout, parts.version < http::Version::HTTP_2);
            }
            cause = error.source();
        }
        ApiError::unreadable_body(error)
    })
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use tower::ServiceExt as _;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::plugins::RouteTable;

    fn test_engine() -> crate::runtime::EngineConfig {
        crate::runtime::EngineConfig {
            cache_dir: None,
            max_memory_bytes: crate::limits::DEFAULT_MEMORY_BYTES,
            fuel: false,
            pooling: false,
            perf_map: false,
        }
    }

    fn empty_app(cors_allowed_origins: Vec<HeaderValue>) -> Router {
        app_loaded(cors_allowed_origins, true)
    }

    fn app_loaded(cors_allowed_origins: Vec<HeaderValue>, loaded: bool) -> Router {
        app(Arc::new(AppState {
            routes: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            runtime: Arc::new(Runtime::new(&test_engine()).unwrap()),
            tracer: Some(spans::host_tracer()),
            cors_allowed_origins,
            metrics: Metrics::new(),
            rollbar: None,
            loaded: Arc::new(AtomicBool::new(loaded)),
        }))
    }

    #[tokio::test]
    async fn no_route_is_a_json_404_once_the_plugins_are_loaded_and_503_before() {
        for (loaded, status, code) in [
            (true, StatusCode::NOT_FOUND, "not_found"),
            (false, StatusCode::SERVICE_UNAVAILABLE, "loading"),
        ] {
            let request = http::Request::get("/api/activities/home")
                .body(Body::empty())
                .unwrap();
            let response = app_loaded(vec![], loaded).oneshot(request).await.unwrap();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).is_some(),
                !loaded
            );
            let body: serde_json::Value =
                serde_json::from_slice(&to_bytes(response.into_body(), 1024).await.unwrap())
                    .unwrap();
            assert_eq!(body["error"]["code"], code);
        }
    }

    #[tokio::test]
    async fn cors_is_off_unless_origins_are_configured() {
        let preflight = || {
            http::Request::options("/api/activities")
                .header(header::ORIGIN, "http://localhost:3000")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .body(Body::empty())
                .unwrap()
        };
        let response = empty_app(vec![]).oneshot(preflight()).await.unwrap();
        assert!(
            response
                .headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .is_none()
        );
        let allowed = vec![HeaderValue::from_static("http://localhost:3000")];
        let response = empty_app(allowed).oneshot(preflight()).await.unwrap();
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:3000"
        );
    }
}
