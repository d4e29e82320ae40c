//! Every error comb answers itself, as one JSON shape:
//! `{"error": {"code": "not_found", "message": "..."}}`. Never HTML, and
//! never internals beyond what a plugin author needs to fix their plugin.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::{
    connections::BodyTimeout,
    runtime::{HandlerError, InvokeError},
};

/// How long a client should wait after a 503, in seconds: calls finish in
/// milliseconds, so a slot is free again almost at once.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 1;

/// An error response: status, a stable machine-readable code, a message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Extra headers: `Allow` for 405, `Retry-After` for 503.
    headers: Vec<(header::HeaderName, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            headers: Vec::new(),
        }
    }

    /// The status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// 404: no plugin serves this path.
    pub(crate) fn not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )
    }

    /// 503 with `Retry-After`: no route serves this path yet, and comb is
    /// still loading its plugins, one of which may serve it.
    pub(crate) fn loading(method: &http::Method, path: &str) -> Self {
        ApiError {
            headers: vec![(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                format!("no route for {method} {path} yet: comb is still loading its plugins"),
            )
        }
    }

    /// 405 with `Allow`: the path is served, not for this method.
    pub(crate) fn method_not_allowed(
        method: &http::Method,
        path: &str,
        allowed: &[http::Method],
    ) -> Self {
        let allow = (allowed.iter().map(http::Method::as_str))
            .collect::<Vec<_>>()
            .join(", ");
        ApiError {
            headers: vec![(header::ALLOW, allow.clone())],
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed for {path}; allowed: {allow}"),
            )
        }
    }

    /// 413: the body is larger than the configured limit.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
    }

    /// 408: the body came too slowly (below the minimum rate, or past its
    /// deadline); `close` asks the client to close the connection.
    pub(crate) fn body_timeout(timeout: &BodyTimeout, close: bool) -> Self {
        let headers = match close {
            true => vec![(header::CONNECTION, "close".to_owned())],
            false => Vec::new(),
        };
        ApiError {
            headers,
            ..Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                timeout.to_string(),
            )
        }
    }

    /// 400: the body could not be read.
    pub(crate) fn unreadable_body(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("reading the request body failed: {error}"),
        )
    }

    /// 503 with `Retry-After`: the plugin runs as many calls as it may.
    pub(crate) fn overloaded(plugin: &str) -> Self {
        ApiError {
            headers: vec![(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())],
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("plugin {plugin} is running as many calls as it may; retry shortly"),
            )
        }
    }

    /// The answer for a call that produced no (valid) response: the
    /// status and code the failure says, a message for the plugin's author.
    pub(crate) fn from_invoke(plugin: &str, error: &InvokeError) -> Self {
        let message = match error {
            InvokeError::Overloaded => return Self::overloaded(plugin),
            InvokeError::Guest(HandlerError::BadRequest(message)) => message.clone(),
            InvokeError::Guest(HandlerError::Internal(message)) => {
                format!("plugin {plugin} failed: {message}")
            }
            InvokeError::Deadline { .. } => {
                format!("plugin {plugin} did not answer within its deadline")
            }
            InvokeError::Fuel { .. } => format!("plugin {plugin} ran out of fuel"),
            InvokeError::Memory { message, .. } => {
                format!("plugin {plugin} exceeded its memory: {message}")
            }
            InvokeError::Instantiate(message) => {
                format!("plugin {plugin} could not be instantiated: {message}")
            }
            InvokeError::ResponseTooLarge { limit } => {
                format!("plugin {plugin} returned a body larger than {limit} bytes")
            }
            InvokeError::InvalidResponse(reason) => {
                format!("plugin {plugin} returned an invalid response: {reason}")
            }
            other => format!("plugin {plugin} trapped: {}", other.message()),
        };
        let (status, code) = error.answer();
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}
