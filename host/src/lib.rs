//! comb serves HTTP routes from WebAssembly component plugins dropped into
//! a folder, and wraps every call in OpenTelemetry spans.
//!
//! A request flows one way through the modules:
//!
//! - [`server`]: the axum app; matches the route, answers errors, opens the
//!   server span.
//! - [`plugins`]: the plugin lifecycle and the immutable route table.
//! - [`runtime`]: wasmtime; a fresh instance per call and the host side of
//!   the WIT (the span API).
//! - [`spans`]: the span model: names, kinds, attributes.
//! - [`telemetry`]: the OTel SDK, OTLP exporter and propagators.
//!
//! [`config`] parses flags and `OTEL_*` environment once; [`serve`] runs it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod spans;
pub mod telemetry;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;
use tokio::net::TcpListener;

use crate::{config::ServeConfig, runtime::Runtime, server::AppState};

/// Loads the plugins in `config.plugins` and serves them on `listener`
/// until `shutdown` resolves, then drains in-flight requests.
///
/// Telemetry must already be initialised ([`telemetry::Telemetry::init`]):
/// spans go to the global tracer provider.
pub async fn serve(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let runtime = Arc::new(Runtime::new().context("creating the wasm engine")?);
    let loaded = plugins::load_dir(&runtime, &config.plugins).await?;
    let serving = loaded.table.routes().len();
    if serving == 0 {
        tracing::warn!(folder = %config.plugins.display(), "no plugin routes to serve; every request will get 404");
    }
    let state = Arc::new(AppState {
        routes: Arc::new(ArcSwap::from_pointee(loaded.table)),
        runtime,
        tracer: spans::host_tracer(),
        max_request_body: config.max_request_body,
        cors_allowed_origins: config.cors_allowed_origins,
    });
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!("listening on http://{address}");
    axum::serve(
        listener,
        server::app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP")
}
