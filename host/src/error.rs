//! Every error comb answers itself, as one JSON shape:
//! `{"error": {"code": "not_found", "message": "..."}}`. Never HTML, and
//! never internals beyond what a plugin author needs to fix their plugin.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::runtime::{HandlerError, InvokeError};

/// An error response: status, a stable machine-readable code, a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    allow: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        ApiError {
            status,
            code,
            message,
            allow: None,
        }
    }

    /// 404: no plugin serves this path.
    pub fn not_found(method: &http::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {method} {path}"),
        )
    }

    /// 405 with `Allow`: the path is served, not for this method.
    pub fn method_not_allowed(method: &http::Method, path: &str, allowed: &[String]) -> Self {
        let allow = allowed.join(", ");
        ApiError {
            allow: Some(allow.clone()),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed for {path}; allowed: {allow}"),
            )
        }
    }

    /// 413: the body is larger than the configured limit.
    pub fn body_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body larger than {limit} bytes"),
        )
    }

    /// 400: the body could not be read.
    pub fn unreadable_body(error: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("reading the request body failed: {error}"),
        )
    }

    /// 500: the plugin returned a response comb cannot send.
    pub fn invalid_response(plugin: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid_response",
            format!("plugin {plugin} returned an invalid response: {reason}"),
        )
    }

    /// The answer for a call that produced no response.
    pub fn from_invoke(plugin: &str, error: &InvokeError) -> Self {
        match error {
            InvokeError::Guest(HandlerError::BadRequest(message)) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", message.clone())
            }
            InvokeError::Guest(HandlerError::Internal(message)) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plugin_error",
                format!("plugin {plugin} failed: {message}"),
            ),
            InvokeError::Trap { message, .. } => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plugin_trapped",
                format!("plugin {plugin} trapped: {message}"),
            ),
            InvokeError::Instantiate(message) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "instantiate_failed",
                format!("plugin {plugin} could not be instantiated: {message}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(allow) = self
            .allow
            .and_then(|allow| HeaderValue::from_str(&allow).ok())
        {
            response.headers_mut().insert(header::ALLOW, allow);
        }
        response
    }
}
