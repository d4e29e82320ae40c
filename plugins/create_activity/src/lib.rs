//! Cruddur's `CreateActivity` service: posts an activity that expires after
//! one of seven ttls.

use comb_sdk::{HandlerError, Manifest, Plugin, Request, Response, trace::Span};
use cruddur::time::{self, Duration};
use cruddur::{ACTIVITY_MAX_CHARS, CURRENT_USER_DISPLAY_NAME, CURRENT_USER_HANDLE, JsonBody};
use serde_json::json;

struct CreateActivity;

/// The ttls the frontend offers, and how long each keeps an activity.
fn ttl_offset(ttl: &str) -> Option<Duration> {
    Some(match ttl {
        "30-days" => Duration::days(30),
        "7-days" => Duration::days(7),
        "3-days" => Duration::days(3),
        "1-day" => Duration::days(1),
        "12-hours" => Duration::hours(12),
        "3-hours" => Duration::hours(3),
        "1-hour" => Duration::hours(1),
        _ => return None,
    })
}

impl Plugin for CreateActivity {
    fn manifest() -> Manifest {
        Manifest::new("create_activity", env!("CARGO_PKG_VERSION"))
            .description("Posts a Cruddur activity (not stored)")
            .route("POST", "/api/activities")
    }

    fn handle(request: Request) -> Result<Response, HandlerError> {
        let span = Span::start("create-activity");
        let now = time::now();
        span.set("app.now", time::isoformat(&now));
        let body = JsonBody::parse(&request)?;
        let message = body.text("message")?;
        let ttl = body.text_or_blank("ttl");
        let handle = CURRENT_USER_HANDLE;

        // The original's checks, in its order; each failure overwrites the
        // last, so the final failing check is the one reported.
        let offset = ttl.as_deref().and_then(ttl_offset);
        let mut error = None;
        if offset.is_none() {
            error = Some("ttl_blank");
        }
        if cruddur::blank(Some(handle)) {
            error = Some("user_handle_blank");
        }
        if let Some(code) = cruddur::check_message(message.as_deref(), ACTIVITY_MAX_CHARS) {
            error = Some(code);
        }
        let model = match (error, offset) {
            (None, Some(offset)) => Ok(json!({
                "uuid": cruddur::uuid4(),
                "display_name": CURRENT_USER_DISPLAY_NAME,
                "handle": handle,
                "message": message,
                "created_at": time::isoformat(&now),
                "expires_at": time::isoformat(&(now + offset)),
            })),
            // A missing offset already set `ttl_blank` (or a later error).
            _ => Err(error.unwrap_or("ttl_blank")),
        };
        Ok(cruddur::respond(&span, model))
    }
}

comb_sdk::export!(CreateActivity);
