//! comb serves HTTP routes from WebAssembly component plugins dropped into
//! a folder, and wraps every call in OpenTelemetry spans.
//!
//! A request flows one way through the modules:
//!
//! - [`server`]: the axum app; matches the route, answers errors, opens the
//!   server span.
//! - [`plugins`]: the plugin lifecycle and the immutable route table.
//! - [`runtime`]: wasmtime; a fresh instance per call, the host side of
//!   the WIT (span API, guest logs and stdio, outgoing HTTP), the sandbox,
//!   and standard `wasi:http` components (`wasi:http/proxy@0.2`, `wasi:http/service@0.3`).
//! - [`spans`]: the span model: names, kinds, attributes.
//! - [`metrics`]: the metric model: instruments, units, attributes.
//! - `logs`: plugins' log lines as OTel log records.
//! - [`telemetry`]: the OTel SDK, OTLP exporters and propagators.
//! - [`dashboard`]: comb's own page: recent traces and per-plugin latency
//!   recorded from ended spans.
//! - `admin`: the admin listener's routes (the page, the plugin list).
//! - `connections`: accepting connections, with their caps and timeouts.
//! - `health`: liveness and readiness for orchestrators.
//! - [`registry`]: plugins from an OCI registry (`comb push`,
//!   `--plugin-ref`), a second source for the lifecycle.
//! - [`rollbar`]: failed plugin calls as Rollbar items.
//! - [`limits`]: per-plugin limits and their enforcement.
//! - [`secret`]: settings that are never printed (keys, tokens, passwords).
//! - `tls`: the one crypto provider every TLS connection comb makes uses.
//!
//! [`config`] parses flags, `OTEL_*` / `COMB_*` environment and `comb.toml`
//! once; [`run`] serves.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod admin;
pub mod config;
mod connections;
pub mod dashboard;
mod error;
mod health;
pub mod limits;
mod logs;
pub mod metrics;
pub mod plugins;
pub mod registry;
pub mod rollbar;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod spans;
pub mod telemetry;
mod tls;

pub use server::run;
pub use tls::install_crypto_provider;
