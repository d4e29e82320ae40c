//! TLS for every connection comb makes (OTLP, registries, Rollbar, a
//! guest's outgoing HTTPS): rustls with ring. wasmtime-wasi-http's client
//! and tonic name ring themselves; reqwest is built without a provider of
//! its own and takes the process default set here.

/// Makes ring rustls's process-wide crypto provider, once. Called before
/// any HTTP client is built; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
