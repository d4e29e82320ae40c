//! Test plugin: a component that does not target comb's world (it exports
//! nothing at all), which comb must reject with the missing export named.

/// A function so the crate is not empty; it is not exported to the host.
pub fn nothing() {}
