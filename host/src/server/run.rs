//! Start-up wiring: the engine, Rollbar, the plugin lifecycle, the probes,
//! the admin listener and shutdown, put together around the request path.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;

use super::{AppState, app};
use crate::{
    admin,
    config::ServeConfig,
    connections,
    dashboard::Recorder,
    health::{self, Health},
    metrics::Metrics,
    plugins::{self, Plugins},
    rollbar::Rollbar,
    runtime::{GuestSpans, Runtime},
    spans,
};

/// Loads the plugins in the configured folder, watches it, and serves
/// them on `listener` (and comb's page, fed by the recorder, and the plugin
/// list on `admin`) until `shutdown` resolves, then drains in-flight
/// requests. Spans guests finish themselves (`wasi:otel`) go to
/// `guest_spans` ([`crate::telemetry::Telemetry::span_intake`]).
///
/// Telemetry must already be initialised ([`crate::telemetry::Telemetry::init`],
/// with the same recorder): spans and metrics go to the global providers.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    admin: Option<(TcpListener, Recorder)>,
    guest_spans: Option<GuestSpans>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let rollbar = Rollbar::start(&config.rollbar)
        .context("setting up Rollbar")?
        .map(Arc::new);
    let mut runtime =
        Runtime::new(&config.plugins.engine(&config.limits)).context("creating the wasm engine")?;
    if let Some(rollbar) = rollbar.as_ref().filter(|_| config.rollbar.guest_errors) {
        runtime = runtime.report_guest_errors(rollbar.guest_errors());
    }
    if let Some(guest_spans) = guest_spans {
        runtime = runtime.export_guest_spans(guest_spans);
    }
    let exports_metrics = config.telemetry.exports_metrics();
    if exports_metrics {
        // faas.cpu_usage needs every call's guest CPU time, sampled or not.
        runtime = runtime.measure_guest_cpu();
    }
    let runtime = Arc::new(runtime);
    tracing::info!(
        pooling = runtime.pooled(),
        fuel = runtime.fuel(),
        "wasm engine ready; default limits: {:?}",
        config.limits()
    );
    let mut plugins = Plugins::new(
        runtime.clone(),
        config.plugins.plugins.clone(),
        config.limits(),
        config.plugins.max_routes_per_plugin,
    )
    .trace_loads(config.trace_loads);
    if let Some(rollbar) = rollbar.clone() {
        // Rollbar shows which build of a plugin an error started with.
        plugins = plugins.on_loaded(move |plugin| {
            rollbar.deploy(&plugin.name, &plugin.version, &plugin.digest);
        });
    }
    let (routes, reports) = (plugins.routes(), plugins.reports());
    let health = Health::default();
    let ready = health.clone();
    // Pulls start at once, beside the folder's first load.
    let pulled = (config.registry)
        .source(config.plugins.cache_dir())
        .map(crate::registry::RegistrySource::watch);
    plugins::watch::load_and_watch(plugins, pulled, move || ready.mark_loaded())?;
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
        metrics: if exports_metrics {
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
        draining.mark_draining();
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
            admin::app(reports, state.routes.clone(), recorder),
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
