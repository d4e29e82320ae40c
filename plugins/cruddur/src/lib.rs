//! What the Cruddur service plugins share.
//!
//! The original Flask backend (week 2 of the AWS Cloud Project Bootcamp)
//! hard-codes its user, answers "model" services with
//! `{'errors': ..., 'data': ...}` turned into 422 + the error list or 200 +
//! the data, and validates message lengths in characters. Each plugin ports
//! one service; this crate keeps the conventions in one place.

pub mod activities;
pub mod time;

use comb_sdk::{
    HandlerError, Request, Response, http,
    trace::{SpanRef, Status},
};
use serde::Serialize;
use serde_json::{Map, Value};

/// The user every handler acts as: there is no auth in week 2.
pub const CURRENT_USER_HANDLE: &str = "andrewbrown";

/// The current user's display name in the mock data.
pub const CURRENT_USER_DISPLAY_NAME: &str = "Andrew Brown";

/// Activities are at most 280 characters (Python `len`: code points).
pub const ACTIVITY_MAX_CHARS: usize = 280;

/// Replies and messages are at most 1024 characters.
pub const MESSAGE_MAX_CHARS: usize = 1024;

/// A fresh random uuid, as `uuid.uuid4()` serialised to a string.
pub fn uuid4() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether a field is blank as the services test it (`None` or `''`).
pub fn blank(value: Option<&str>) -> bool {
    value.is_none_or(str::is_empty)
}

/// The result of a model service: one error code (the last failing check
/// wins, as each check overwrites the list in the original) or the data.
pub type Model<T> = Result<T, &'static str>;

/// Answers a model: 200 with the data, or 422 with the one-element error
/// list. A validation failure is recorded on `span` (error status and
/// `app.error_code`), not as an exception: the client erred, not the code.
pub fn respond<T: Serialize>(span: &SpanRef, model: Model<T>) -> Response {
    match model {
        Ok(data) => http::json(200, &data),
        Err(code) => {
            span.set("app.error_code", code);
            span.set_status(Status::Error(code.to_owned()));
            http::json(422, &[code])
        }
    }
}

/// A request's JSON body, read as the Flask handlers read `request.json`:
/// a missing field (or a body that is JSON but not an object) counts as
/// blank; a body that is not JSON at all is a 400.
pub struct JsonBody(Map<String, Value>);

impl JsonBody {
    /// Parses the request body.
    pub fn parse(request: &Request) -> Result<JsonBody, HandlerError> {
        let value: Value = request.json()?;
        Ok(JsonBody(match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }))
    }

    /// A text field: `None` when missing or `null`; a 400 when it holds a
    /// number, list or object, which no client of these routes sends.
    pub fn text(&self, field: &str) -> Result<Option<String>, HandlerError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(HandlerError::BadRequest(format!(
                "field {field:?} must be a string, not {other}"
            ))),
        }
    }

    /// A field that is blank unless it is a string: `ttl` accepts only its
    /// seven values, so anything else is simply not one of them.
    pub fn text_or_blank(&self, field: &str) -> Option<String> {
        self.0.get(field).and_then(Value::as_str).map(str::to_owned)
    }
}

/// The checks shared by replies and messages, in the original's order:
/// a blank message, then one over `max_chars` characters.
pub fn check_message(message: Option<&str>, max_chars: usize) -> Option<&'static str> {
    match message {
        None | Some("") => Some("message_blank"),
        Some(text) if text.chars().count() > max_chars => Some("message_exceed_max_chars"),
        Some(_) => None,
    }
}
