//! The console's answers: JSON, and the status each failure gets.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use tracing::warn;

use crate::broker::dlq_pass::DlqBusy;

/// Why a request failed, as the status it gets.
pub enum ApiError {
    Bad(String),
    NotFound(String),
    Failed(anyhow::Error),
    /// The DLQ changed since the page counted: `(the page's count, now)`.
    Changed(u64, u64),
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::Failed(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Bad(m) => error(StatusCode::BAD_REQUEST, &m),
            ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, &m),
            ApiError::Changed(expected, matched) => json_response(
                StatusCode::CONFLICT,
                &json!({
                    "error": format!(
                        "the DLQ changed: {matched} messages match now, not the {expected} \
                         the page counted; nothing was done (read again)"
                    ),
                    "expected": expected,
                    "matched": matched,
                }),
            ),
            ApiError::Failed(e) => match e.chain().find_map(|c| c.downcast_ref::<DlqBusy>()) {
                // The page says so; the DlqBusy text starts with "another
                // DLQ operation is running".
                Some(busy) => error(StatusCode::CONFLICT, &busy.to_string()),
                None => {
                    warn!("console: {e:#}");
                    error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
                }
            },
        }
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) fn ok(value: &impl Serialize) -> ApiResult {
    Ok(json_response(StatusCode::OK, value))
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

// === filters ===
