//! Test plugin that fails on purpose, one way per route, so the tests can
//! check that a bad call ends only itself.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, http, trace::Span};

struct Faulty;

impl Plugin for Faulty {
    fn manifest() -> Manifest {
        Manifest::new("faulty", "0.0.1")
            .route("GET", "/faulty/ok")
            .route("GET", "/faulty/panic")
            .route("GET", "/faulty/unreachable")
            .route("GET", "/faulty/error")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("faulty-work");
        span.set("app.route", request.route.as_str());
        match request.path.as_str() {
            "/faulty/panic" => panic!("faulty plugin panicked on purpose"),
            "/faulty/unreachable" => core::arch::wasm32::unreachable(),
            "/faulty/error" => Err(HandlerError::Internal(
                "faulty plugin failed on purpose".into(),
            )),
            _ => Ok(http::json(200, &serde_json::json!({"ok": true}))),
        }
    }
}

comb_sdk::export!(Faulty);
