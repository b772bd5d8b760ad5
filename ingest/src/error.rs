//! The one HTTP error type of ingest: every failure a handler can return,
//! mapped to a status and the contract's JSON body
//! `{"error":"<code>","message":"…"}` (plus the field errors where there
//! are some).
//!
//! Client mistakes are 4xx and logged at debug at most; a 500 never shows
//! internals to the client. This module must never decide what is
//! dead-lettered: the handlers do that before they return an error.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bus::model::FieldError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// The whole body could not be used (bad JSON, bad XML, not CAP 1.2,
    /// empty); `code` names the kind of problem.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        errors: Vec<FieldError>,
    },
    #[error("body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{count} items; at most {limit} are allowed in one request")]
    BatchTooLarge { count: usize, limit: usize },
    /// A CAP alert with more `<info>` than `ingest.max_cap_infos`: each
    /// would become an event, so one request could flood the intake.
    #[error("the alert has {count} <info> elements; at most {limit} are accepted")]
    TooManyInfos { count: usize, limit: usize },
    /// The body did not arrive within `http.body_read_timeout_s`; what
    /// came is dead-lettered, the client must send the request again.
    #[error("the body did not arrive within {seconds} s; send the request again")]
    BodyTimeout { seconds: u64 },
    #[error("content type {0}")]
    UnsupportedMediaType(String),
    /// Kafka or the store could not take the request in bounded time: retry.
    #[error("{message}")]
    Unavailable { message: String, retry_after_s: u64 },
    /// A bug or an unexpected failure; the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    pub fn bad_request(code: &'static str, message: impl Into<String>, errors: Vec<FieldError>) -> IngestError {
        IngestError::BadRequest {
            code,
            message: message.into(),
            errors,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            IngestError::Forbidden(_) => StatusCode::FORBIDDEN,
            IngestError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            IngestError::TooLarge { .. } | IngestError::BatchTooLarge { .. } | IngestError::TooManyInfos { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            IngestError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            IngestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Unauthorized(_) => "unauthorized",
            IngestError::Forbidden(_) => "forbidden",
            IngestError::BadRequest { code, .. } => code,
            IngestError::TooLarge { .. } => "body_too_large",
            IngestError::BatchTooLarge { .. } => "batch_too_large",
            IngestError::TooManyInfos { .. } => "too_many_infos",
            IngestError::UnsupportedMediaType(_) => "unsupported_media_type",
            IngestError::BodyTimeout { .. } => "body_timeout",
            IngestError::Unavailable { .. } => "unavailable",
            IngestError::Internal(_) => "internal",
        }
    }

    /// The field errors this error carries, as a dead letter records them.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            IngestError::BadRequest { errors, .. } if !errors.is_empty() => errors.clone(),
            IngestError::TooManyInfos { .. } => vec![FieldError::new("info", self.to_string())],
            other => vec![FieldError::new("", other.to_string())],
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            IngestError::Internal(detail) => {
                tracing::error!(error = %detail, "ingest request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = json!({"error": self.code(), "message": message});
        if let IngestError::BadRequest { errors, .. } = &self
            && !errors.is_empty()
        {
            body["errors"] = json!(errors);
        }
        if let IngestError::TooManyInfos { .. } = &self {
            body["errors"] = json!(self.field_errors());
        }
        let mut response = (status, Json(body)).into_response();
        if let IngestError::Unavailable { retry_after_s, .. } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        if let IngestError::Unauthorized(_) = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
