//! The one error type of the api: every REST handler returns it, and the
//! WebSocket maps the same variants to the contract's error codes. Client
//! mistakes are 4xx with a message and are never logged as errors; a 500
//! hides what went wrong inside (the log has it).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_S: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Kafka or the store cannot take the request now: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside; the message is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

/// Body of every error response: `{"error":"<code>","message":"…"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
}

impl ApiError {
    /// The contract's error code (also used on the WebSocket).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client may read: internals are replaced by a generic text.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    pub fn bad_field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("{field}: {message}"))
    }
}

impl From<bus::store::StoreError> for ApiError {
    fn from(e: bus::store::StoreError) -> Self {
        match e {
            bus::store::StoreError::Unavailable(m) => ApiError::Unavailable(format!("store unavailable: {m}")),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(m) => tracing::error!(error = %m, "api request failed"),
            ApiError::Unavailable(m) => tracing::warn!(error = %m, "api dependency unavailable"),
            _ => tracing::debug!(code = self.code(), message = %self, "api request refused"),
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            message: self.public_message(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        response
    }
}
