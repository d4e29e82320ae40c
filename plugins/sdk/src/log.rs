//! Log lines tied to the request's trace, through comb's `log` interface:
//! each becomes a `log` event on the current span and a line in comb's log
//! with the trace id, span id and plugin name. `println!` and `eprintln!`
//! lines land there too (at INFO and WARN), without fields.
//!
//! ```ignore
//! comb_sdk::log::info("loaded mock data", vec![("app.result_length", 3.into())]);
//! ```

pub use crate::bindings::comb::plugin::log::Level;
use crate::{
    bindings::comb::plugin::log as wit,
    trace::{Value, key_values},
};

/// Logs `message` at `level` with `fields`.
pub fn log(level: Level, message: &str, fields: Vec<(&str, Value)>) {
    wit::log(level, message, &key_values(fields));
}

/// Logs at `debug`.
pub fn debug(message: &str, fields: Vec<(&str, Value)>) {
    log(Level::Debug, message, fields);
}

/// Logs at `info`.
pub fn info(message: &str, fields: Vec<(&str, Value)>) {
    log(Level::Info, message, fields);
}

/// Logs at `warn`.
pub fn warn(message: &str, fields: Vec<(&str, Value)>) {
    log(Level::Warn, message, fields);
}

/// Logs at `error`.
pub fn error(message: &str, fields: Vec<(&str, Value)>) {
    log(Level::Error, message, fields);
}
