//! Failed plugin calls reported to Rollbar from a layer around the request
//! path, as axum's error-handling example reports errors: the request path
//! leaves a [`FailedCall`] in the failed answer's extensions and knows
//! nothing of Rollbar.

use std::sync::Arc;

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::Response,
};

use super::FailedCall;
use crate::{
    connections::Peer,
    rollbar::{FailedRequest, Failure, Rollbar},
};

/// Passes `request` on; when its answer carries a [`FailedCall`] that is
/// not the client's fault, sends it to Rollbar with what an item shows of
/// the request (its head, kept from before the call: the call consumes it).
pub(super) async fn report_failures(
    State(rollbar): State<Arc<Rollbar>>,
    request: Request,
    next: Next,
) -> Response {
    let client = (request.extensions().get::<ConnectInfo<Peer>>()).map(|info| info.0.address.ip());
    let (method, uri, headers) = (
        request.method().clone(),
        request.uri().clone(),
        request.headers().clone(),
    );
    let response = next.run(request).await;
    if let Some(failed) = response.extensions().get::<FailedCall>()
        && !failed.error.is_client_error()
    {
        rollbar.report(&Failure {
            plugin: failed.plugin.identity(),
            error: &failed.error,
            request: FailedRequest {
                method,
                uri,
                headers,
                client_address: client,
                route: failed.route.to_string(),
            },
            trace_id: failed.span.trace_id().to_string(),
            span_id: failed.span.span_id().to_string(),
        });
    }
    response
}
