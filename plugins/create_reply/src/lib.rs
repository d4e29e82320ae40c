//! Cruddur's `CreateReply` service: replies to an activity.
//!
//! A failed validation answers 422 like every other service (the original
//! crashed into a 500 on an undefined name in its error branch).

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time;
use cruddur::{CURRENT_USER_DISPLAY_NAME, CURRENT_USER_HANDLE, JsonBody, MESSAGE_MAX_CHARS};
use serde_json::json;

struct CreateReply;

impl Plugin for CreateReply {
    fn manifest() -> Manifest {
        Manifest::new("create_reply", env!("CARGO_PKG_VERSION"))
            .description("Replies to a Cruddur activity (not stored)")
            .route("POST", "/api/activities/:uuid/reply")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("create-reply");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let body = JsonBody::parse(&request)?;
        let message = body.text("message")?;
        let activity_uuid = request.param("uuid");
        let handle = CURRENT_USER_HANDLE;

        let mut error = None;
        if cruddur::blank(Some(handle)) {
            error = Some("user_handle_blank");
        }
        if cruddur::blank(activity_uuid) {
            error = Some("activity_uuid_blank");
        }
        if let Some(code) = cruddur::check_message(message.as_deref(), MESSAGE_MAX_CHARS) {
            error = Some(code);
        }
        let model = match error {
            Some(code) => Err(code),
            None => Ok(json!({
                "uuid": cruddur::uuid4(),
                "display_name": CURRENT_USER_DISPLAY_NAME,
                "handle": handle,
                "message": message,
                "created_at": time::isoformat(&now),
                "reply_to_activity_uuid": activity_uuid,
            })),
        };
        Ok(cruddur::respond(&span, model))
    }
}

comb_sdk::export!(CreateReply);
