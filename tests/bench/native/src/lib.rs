//! What the benchmark's two native servers share.

use axum::Router;

/// Serves `app` on the address given as the first argument (else
/// `default`), saying where on stderr, until the process is killed.
pub async fn serve(default: &str, app: Router) {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| default.to_owned());
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .expect("binding");
    eprintln!(
        "listening on http://{}",
        listener.local_addr().expect("bound")
    );
    axum::serve(listener, app).await.expect("serving");
}
