//! The AI Mentor Studio API behind the gate.
//!
//! Requests reach this module only with valid credentials. It answers in the API's own JSON,
//! errors included: the `Exception` body, `{"Errors":["…"],"StatusCode":N}`, which the
//! official clients parse on every non-200 answer.

use serde_json::json;

use crate::app::App;
use crate::http::{Request, Response, Status};

/// Routes an authenticated request.
pub fn route(_app: &App, request: &Request<'_>) -> Response {
    error(Status::NOT_FOUND, &format!("no API method at {}", request.path))
}

/// The API's error body for `status`.
pub fn error(status: Status, message: &str) -> Response {
    let body = json!({ "Errors": [message], "StatusCode": status.0 });
    Response::json(status, body.to_string().into_bytes())
}
