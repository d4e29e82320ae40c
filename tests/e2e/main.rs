//! End-to-end tests: the real `comb` binary on a free loopback port, the
//! real plugins built for wasm32-wasip2 (once per test run), and a real
//! OTLP receiver decoding what comb exports.

#![allow(missing_docs, unreachable_pub, reason = "test crate")]

mod canary;
mod cruddur;
mod harness;
mod health;
mod hostile;
mod isolation;
mod languages;
mod lifecycle;
mod limits;
mod logs;
mod metrics;
mod otlp;
mod outgoing;
mod page;
mod profile;
mod propagation;
mod proxy;
mod registry;
mod rollbar;
mod serve;
mod traces;
mod wasi_otel;
