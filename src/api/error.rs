//! The one mapping from API errors to status codes and `{"error","details"}` bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::protocol::ErrorBody;
use crate::store::StoreError;

/// An error answer of the socket API (docs/api.md §3).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{error}: {details}")]
    BadRequest { error: String, details: String },
    #[error("unknown instance: {0}")]
    UnknownInstance(String),
    #[error("no such message: {0}")]
    UnknownMessage(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("request entity too large")]
    TooLarge(usize),
    #[error("forbidden: uid {0}")]
    Forbidden(u32),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
    /// The events after the `after` asked for were deleted by retention: the oldest
    /// kept is this one (410 with `oldest`).
    #[error("events gone: the oldest kept is {0}")]
    EventsGone(i64),
    /// No consumer of the stream has this name.
    #[error("unknown consumer: {0}")]
    UnknownConsumer(String),
    /// No route has this path.
    #[error("no such endpoint")]
    NoRoute,
    /// The path exists, for another method.
    #[error("method not allowed")]
    WrongMethod,
}

impl ApiError {
    pub fn bad_request(error: impl Into<String>, details: impl Into<String>) -> Self {
        ApiError::BadRequest {
            error: error.into(),
            details: details.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::UnknownMessage(String::new()),
            StoreError::Conflict(state) => ApiError::Conflict(format!("the message is {state}")),
            StoreError::IdempotencyMismatch => ApiError::Conflict(
                "Idempotency-Key was already used with a different body".to_string(),
            ),
            StoreError::Full(m) => ApiError::Unavailable(format!("database full: {m}")),
            StoreError::Unavailable(m) => {
                ApiError::Unavailable(format!("database unavailable: {m}"))
            }
            StoreError::Unsupported(why) => ApiError::BadRequest {
                error: "not available with this database".to_string(),
                details: why,
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The largest error answer: whatever input is echoed into one (a batch's bad cards,
/// a parser's message), a client never has to take in more than this.
pub const MAX_ERROR_ANSWER: usize = 64 * 1024;
/// The most either text of an error answer holds at first; cut further if the JSON
/// escaping of odd characters still makes the answer too long.
const MAX_TEXT: usize = 30 * 1024;

/// `text` cut to at most `max` bytes (on a character boundary), saying it was cut.
pub(super) fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" …(cut)");
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, details) = match self {
            ApiError::EventsGone(oldest) => {
                let body = serde_json::json!({
                    "error": "gone",
                    "details": format!("events before {oldest} were deleted (queue.keep_done); start again from after={}", oldest - 1),
                    "oldest": oldest,
                });
                return (StatusCode::GONE, Json(body)).into_response();
            }
            ApiError::UnknownConsumer(name) => (
                StatusCode::NOT_FOUND,
                "unknown consumer".to_string(),
                format!("no consumer named '{name}' has a cursor"),
            ),
            ApiError::BadRequest { error, details } => (StatusCode::BAD_REQUEST, error, details),
            ApiError::UnknownInstance(name) => (
                StatusCode::NOT_FOUND,
                "unknown instance".to_string(),
                format!("no instance named '{name}' is configured"),
            ),
            ApiError::UnknownMessage(id) => {
                (StatusCode::NOT_FOUND, "no such message".to_string(), id)
            }
            ApiError::Conflict(details) => (StatusCode::CONFLICT, "conflict".to_string(), details),
            ApiError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request entity too large".to_string(),
                format!("the body is over {} KiB", limit / 1024),
            ),
            ApiError::Forbidden(uid) => (
                StatusCode::FORBIDDEN,
                "forbidden".to_string(),
                format!("uid {uid} is not allowed to enqueue"),
            ),
            ApiError::Unavailable(details) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service unavailable".to_string(),
                details,
            ),
            ApiError::Internal(details) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_string(),
                details,
            ),
            ApiError::NoRoute => (
                StatusCode::NOT_FOUND,
                "not found".to_string(),
                "no such endpoint (the routes are under /v1/)".to_string(),
            ),
            ApiError::WrongMethod => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".to_string(),
                "this path takes another method (see the routes under /v1/)".to_string(),
            ),
        };
        let mut max = MAX_TEXT;
        loop {
            let body = ErrorBody {
                error: truncated(error.clone(), max),
                details: truncated(details.clone(), max),
            };
            let fits = serde_json::to_vec(&body).map_or(true, |b| b.len() <= MAX_ERROR_ANSWER);
            if fits || max < 256 {
                return (status, Json(body)).into_response();
            }
            max /= 4;
        }
    }
}
