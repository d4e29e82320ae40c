//! Cruddur's `CreateMessage` service: sends a message to
//! `user_receiver_handle`. The error code keeps the original's spelling,
//! `user_reciever_handle_blank`, which clients match on.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time;
use cruddur::{CURRENT_USER_DISPLAY_NAME, CURRENT_USER_HANDLE, JsonBody, MESSAGE_MAX_CHARS};
use serde_json::json;

struct CreateMessage;

impl Plugin for CreateMessage {
    fn manifest() -> Manifest {
        Manifest::new("create_message", env!("CARGO_PKG_VERSION"))
            .description("Sends a Cruddur message (not stored)")
            .route("POST", "/api/messages")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("create-message");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let body = JsonBody::parse(&request)?;
        let message = body.text("message")?;
        let receiver = body.text("user_receiver_handle")?;
        let sender = CURRENT_USER_HANDLE;

        let mut error = None;
        if cruddur::blank(Some(sender)) {
            error = Some("user_sender_handle_blank");
        }
        if cruddur::blank(receiver.as_deref()) {
            error = Some("user_reciever_handle_blank");
        }
        if let Some(code) = cruddur::check_message(message.as_deref(), MESSAGE_MAX_CHARS) {
            error = Some(code);
        }
        let model = match error {
            Some(code) => Err(code),
            None => Ok(json!({
                "uuid": cruddur::uuid4(),
                "display_name": CURRENT_USER_DISPLAY_NAME,
                "handle": sender,
                "message": message,
                "created_at": time::isoformat(&now),
            })),
        };
        Ok(cruddur::respond(&span, model))
    }
}

comb_sdk::export!(CreateMessage);
