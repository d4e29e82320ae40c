//! Test plugin that calls another HTTP service through wasi:http, so the
//! tests can follow a trace across the call.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, client, http, trace::Span};
use serde_json::json;

struct Caller;

impl Plugin for Caller {
    fn manifest() -> Manifest {
        Manifest::new("caller", "0.0.1")
            .route("GET", "/caller/fetch")
            .route("GET", "/caller/baggage")
    }

    /// `GET /caller/baggage`: the request's baggage as a JSON object.
    ///
    /// `GET /caller/fetch?url=URL`: fetches URL inside a span
    /// `fetch-upstream`; 200 with what came back, 502 with the error.
    fn handle(request: Request) -> Result<Response, HandlerError> {
        if request.path == "/caller/baggage" {
            let baggage: serde_json::Map<String, serde_json::Value> = comb_sdk::trace::baggage()
                .into_iter()
                .map(|(name, value)| (name, value.into()))
                .collect();
            return Ok(http::json(200, &baggage));
        }
        let url = request.query_param("url").unwrap_or_default();
        let span = Span::start("fetch-upstream");
        span.set("app.upstream", url.as_str());
        match client::get(&url) {
            Ok(response) => Ok(http::json(
                200,
                &json!({
                    "status": response.status,
                    "body": String::from_utf8_lossy(&response.body),
                }),
            )),
            Err(error) => {
                span.record_error("upstream", &error.to_string());
                Ok(http::json(502, &json!({ "error": error.to_string() })))
            }
        }
    }
}

comb_sdk::export!(Caller);
