//! Log lines tied to the request's trace, through comb's `log` interface:
//! each becomes a `log` event on the current span and a line in comb's log
//! with the trace id, span id and plugin name. `println!` and `eprintln!`
//! lines land there too (at INFO and WARN), without fields.
//!
//! ```no_run
//! use comb_sdk::log;
//!
//! log::info("loaded mock data", [("app.result_length", 3.into())]);
//! log::warn("no results", []);
//! ```

pub use crate::bindings::comb::plugin::log::Level;
use crate::{
    bindings::comb::plugin::log as wit,
    trace::{Value, key_values},
};

/// Logs `message` at `level` with `fields`.
pub fn log<'a>(level: Level, message: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    wit::log(level, message, &key_values(fields));
}

/// Logs at `debug`.
pub fn debug<'a>(message: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    log(Level::Debug, message, fields);
}

/// Logs at `info`.
pub fn info<'a>(message: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    log(Level::Info, message, fields);
}

/// Logs at `warn`.
pub fn warn<'a>(message: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    log(Level::Warn, message, fields);
}

/// Logs at `error`.
pub fn error<'a>(message: &str, fields: impl IntoIterator<Item = (&'a str, Value)>) {
    log(Level::Error, message, fields);
}
