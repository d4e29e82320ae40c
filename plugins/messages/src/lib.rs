//! Cruddur's `Messages` service: the conversation with `@:handle`.
//!
//! The path's handle is the receiver (the original ignored it and read a
//! misspelled query argument instead); the mock data is the same for all.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time;
use cruddur::{CURRENT_USER_DISPLAY_NAME, CURRENT_USER_HANDLE};
use serde_json::json;

struct Messages;

impl Plugin for Messages {
    fn manifest() -> Manifest {
        Manifest::new("messages", env!("CARGO_PKG_VERSION"))
            .description("A Cruddur conversation (mock data)")
            .route("GET", "/api/messages/@:handle")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("messages-mock-data");
        let now = time::isoformat(&time::now());
        span.set("app.now", now.as_str());
        span.set(
            "app.user_receiver_handle",
            request.param("handle").unwrap_or_default(),
        );
        let results = json!([
            {
                "uuid": "4e81c06a-db0f-4281-b4cc-98208537772a",
                "display_name": CURRENT_USER_DISPLAY_NAME,
                "handle": CURRENT_USER_HANDLE,
                "message": "Cloud is fun!",
                "created_at": now,
            },
            {
                "uuid": "66e12864-8c26-4c3a-9658-95a10f8fea67",
                "display_name": CURRENT_USER_DISPLAY_NAME,
                "handle": CURRENT_USER_HANDLE,
                "message": "This platform is great!",
                "created_at": now,
            },
        ]);
        span.set("app.result_length", results.as_array().map_or(0, Vec::len));
        Ok(cruddur::respond(&span, Ok(results)))
    }
}

comb_sdk::export!(Messages);
