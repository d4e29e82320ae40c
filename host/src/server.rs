//! The request path: match the route, run the plugin, answer — each request
//! wrapped in a server span, each plugin call in an invocation span.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
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

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    admin,
    config::ServeConfig,
    connections::{self, BodyTimeout, Peer},
    dashboard::Recorder,
    error::ApiError,
    health::{self, Health},
    metrics::{AnsweredRequest, Metrics},
    plugins::{self, Lookup, Plugin, Plugins, SharedRoutes, invocation},
    rollbar::{FailedRequest, Failure, Rollbar},
    runtime::{Answer, InvokeError, RoutedRequest, Runtime},
    spans::{self, IncomingRequest},
};

/// Loads the plugins in the configured folder, watches it, and serves
/// them on `listener` (and comb's page, fed by the recorder, and the plugin
/// list on `admin`) until `shutdown` resolves, then drains in-flight
/// requests.
///
/// Telemetry must already be initialised ([`crate::telemetry::Telemetry::init`],
/// with the same recorder): spans and metrics go to the global providers.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    admin: Option<(TcpListener, Recorder)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runtime = Arc::new(
        Runtime::new(&config.plugins.engine(&config.limits)).context("creating the wasm engine")?,
    );
    tracing::info!(
        pooling = runtime.pooled(),
        fuel = runtime.fuel(),
        "wasm engine ready; default limits: {:?}",
        config.limits()
    );
    let rollbar = Rollbar::start(&config.rollbar)
        .context("setting up Rollbar")?
        .map(Arc::new);
    let mut plugins = Plugins::new(
        runtime.clone(),
        config.plugins.plugins.clone(),
        config.limits(),
        config.plugins.max_routes_per_plugin,
    )
    .trace_loads(config.trace_loads);
    if let Some(rollbar) = rollbar.clone() {
        if config.rollbar.guest_errors {
            crate::rollbar::report_guest_errors(rollbar.clone());
        }
        // Rollbar shows which build of a plugin an error started with.
        plugins = plugins.on_loaded(move |plugin| {
            rollbar.deploy(&plugin.name, &plugin.version, &plugin.digest);
        });
    }
    let (routes, reports) = (plugins.routes(), plugins.reports());
    let health = Health::default();
    let ready = health.clone();
    let registry = config.registry.source(config.plugins.cache_dir());
    plugins::watch::load_and_watch(plugins, registry, move || ready.loaded())?;
    let mut connection_limits = config.connection_limits();
    // Every connection is a file descriptor: the caps of all listeners
    // together stay under the process's limit, with room for the rest.
    let open_files = connections::raise_open_files_limit();
    let listeners = 1 + usize::from(admin.is_some()) + usize::from(config.health_listen.is_some());
    let cap = connections::connection_cap(connection_limits.max_connections, listeners, open_files);
    if cap < connection_limits.max_connections {
        tracing::warn!(
            "open files: {open_files}; connections capped at {cap} per listener ({listeners} listeners, {} kept for plugins, exports and registries), under --max-connections {}",
            connections::FD_HEADROOM,
            connection_limits.max_connections
        );
    } else {
        tracing::info!("open files: {open_files}; connections capped at {cap} per listener");
    }
    connection_limits.max_connections = cap;
    let state = Arc::new(AppState {
        routes,
        runtime,
        tracer: (!config.telemetry.sdk_disabled).then(spans::host_tracer),
        cors_allowed_origins: config.cors_allowed_origins,
        metrics: if config.telemetry.exports_metrics() {
            Metrics::new()
        } else {
            Metrics::off()
        },
        rollbar,
        loaded: health.first_load_done(),
    });
    // One shutdown signal for every listener, after the delay in which
    // comb is not ready but still serves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let delay = Duration::from_millis(config.shutdown_delay_ms);
    let draining = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.draining();
        if !delay.is_zero() {
            tracing::info!(
                "not ready (/readyz 503); serving {} ms more before draining",
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
        }
        let _ = stop_tx.send(true);
    });
    if let Some(address) = config.health_listen {
        let probes = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding the health listener {address}"))?;
        let address = probes.local_addr().context("reading the health address")?;
        tracing::info!("health listening on http://{address} (/livez, /readyz)");
        tokio::spawn(connections::serve(
            probes,
            health::app(health),
            connection_limits,
            stop_rx.clone(),
        ));
    }
    if let Some((admin, recorder)) = admin {
        let address = admin.local_addr().context("reading the admin address")?;
        tracing::info!(
            "admin listening on http://{address} (comb's page: /_comb/, plugin list: /_comb/plugins)"
        );
        tokio::spawn(connections::serve(
            admin,
            admin::app(reports, recorder),
            connection_limits,
            stop_rx.clone(),
        ));
    }
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{address}");
    connections::serve(listener, app(state.clone()), connection_limits, stop_rx).await;
    if let Some(rollbar) = &state.rollbar {
        rollbar.shutdown().await;
    }
    Ok(())
}

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
/// CORS when origins are configured.
pub fn app(state: Arc<AppState>) -> Router {
    let cors = cors(&state.cors_allowed_origins);
    let router = Router::new().fallback(serve_request).with_state(state);
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
    let lookup = table.lookup(parts.method.as_str(), parts.uri.path());
    // Borrowed from the table, which outlives the request: no copies.
    let (route, identity) = match &lookup {
        Lookup::Found { route, .. } => {
            (Some(route.pattern.shared()), Some(route.target.identity()))
        }
        Lookup::MethodNotAllowed { pattern, .. } => (Some(pattern.shared()), None),
        Lookup::NotFound => (None, None),
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
            let plugin = route.target.clone();
            let pattern = route.pattern.to_string();
            call_plugin(&state, &server_cx, &plugin, pattern, params, parts, body).await
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
/// the outcome into a response plus, for a failure, its `error.type`.
async fn call_plugin(
    state: &AppState,
    server_cx: &Context,
    plugin: &Arc<Plugin>,
    route: String,
    params: Vec<(String, String)>,
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
    // What a Rollbar item shows of the request; kept only when it is on.
    let head = state.rollbar.as_ref().map(|_| {
        let client = (parts.extensions.get::<ConnectInfo<Peer>>()).map(|info| info.0.address.ip());
        FailedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            client_address: client,
            route: route.clone(),
        }
    });
    let Some(slot) = plugin.try_slot() else {
        let failure = InvokeError::Overloaded;
        spans::record_limit_hit(server_cx, failure.limit_hit());
        report(state, server_cx, plugin, &failure, head);
        return (
            ApiError::from_invoke(&plugin.name, &failure).into_response(),
            Some(failure.error_type()),
        );
    };
    let request = RoutedRequest {
        http: http::Request::from_parts(parts, body),
        route,
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
        timings.instantiate,
        timings.instantiate + timings.call,
        result.as_ref().err().map(InvokeError::error_type),
    );
    let answer = result.and_then(|response| {
        if response.body_len() > limits.max_response_body {
            return Err(InvokeError::ResponseTooLarge {
                limit: limits.max_response_body,
            });
        }
        into_http(response).map_err(InvokeError::InvalidResponse)
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
            report(state, &invocation_cx, plugin, &failure, head);
            (
                ApiError::from_invoke(&plugin.name, &failure).into_response(),
                Some(failure.error_type()),
            )
        }
    }
}

/// Sends a failed call to Rollbar, when it is on and the failure is not
/// the client's; `cx` holds the span the item links to.
fn report(
    state: &AppState,
    cx: &Context,
    plugin: &Plugin,
    failure: &InvokeError,
    request: Option<FailedRequest>,
) {
    let (Some(rollbar), Some(request)) = (&state.rollbar, request) else {
        return;
    };
    if failure.is_client_error() {
        return;
    }
    let span = cx.span();
    let ids = span.span_context();
    rollbar.report(&Failure {
        plugin: plugin.identity(),
        error: failure,
        request,
        trace_id: ids.trace_id().to_string(),
        span_id: ids.span_id().to_string(),
    });
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

/// Headers that describe the connection or the message's framing, not the
/// response: comb frames what it sends (hyper writes `content-length` or
/// chunks from the body it is given), so a plugin's values are dropped. A
/// plugin's `content-length: 3` over a longer body would otherwise let the
/// rest be read as the answer to the client's *next* request on the
/// connection. The RFC 9110 hop-by-hop list, plus `content-length` and
/// `proxy-connection`.
pub(crate) const FRAMING_HEADERS: [HeaderName; 10] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The most headers a plugin's response may carry. Clients cap what they
/// read (hyper's client at 100 headers, comb adding a few of its own), and
/// beyond 32 768 hyper's header map panics.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 64;

/// The most bytes a plugin's response headers may take, names and values.
pub(crate) const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// A plugin's response as HTTP, or why it is not a valid one. comb owns
/// the framing: see [`FRAMING_HEADERS`].
fn into_http(answer: Answer) -> Result<Response, String> {
    let (status, mut headers, body) = match answer {
        Answer::Record(record) => {
            let headers = header_map(record.headers)?;
            (record.status, headers, record.body.into())
        }
        Answer::Http(response) => {
            let (parts, body) = response.into_parts();
            let bytes = (parts.headers.iter())
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum();
            check_header_size(parts.headers.len(), bytes)?;
            (parts.status.as_u16(), parts.headers, body)
        }
    };
    let status = StatusCode::from_u16(status)
        .ok()
        .filter(|status| (200..=599).contains(&status.as_u16()))
        .ok_or_else(|| format!("status {status} is not a final HTTP status"))?;
    // Headers that `connection` names are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in FRAMING_HEADERS.iter().chain(&named) {
        headers.remove(name);
    }
    let mut http = Response::new(Body::from(body));
    *http.status_mut() = status;
    *http.headers_mut() = headers;
    Ok(http)
}

/// A response record's headers as a header map, checked before any is
/// added.
fn header_map(fields: Vec<(String, String)>) -> Result<http::HeaderMap, String> {
    let bytes = (fields.iter())
        .map(|(name, value)| name.len() + value.len())
        .sum();
    check_header_size(fields.len(), bytes)?;
    let mut headers = http::HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("invalid value for header {name}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether `count` headers of `bytes` bytes (names and values) are within
/// [`MAX_RESPONSE_HEADERS`] and [`MAX_RESPONSE_HEADER_BYTES`].
fn check_header_size(count: usize, bytes: usize) -> Result<(), String> {
    if count > MAX_RESPONSE_HEADERS {
        return Err(format!(
            "{count} headers, more than the {MAX_RESPONSE_HEADERS} allowed"
        ));
    }
    if bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(format!(
            "{bytes} bytes of headers, more than the {MAX_RESPONSE_HEADER_BYTES} allowed"
        ));
    }
    Ok(())
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
