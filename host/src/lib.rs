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
//! - [`admin`]: the admin listener's routes (the plugin list).
//! - [`limits`]: per-plugin limits and their enforcement.
//!
//! [`config`] parses flags and `OTEL_*` environment once; [`run`] serves.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod error;
pub mod limits;
pub mod plugins;
pub mod runtime;
pub mod server;
pub mod spans;
pub mod telemetry;

pub use server::run;
