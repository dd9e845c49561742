//! The one error type of the HTTP edge, rendered in the shape Pipedrive's provider contract uses
//! for every failure: `{"success": false, "data": {"message": "…", "code": "…"}}`.
//!
//! Internal causes are logged, never sent: a 500 says only that something went wrong.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

/// A failed request, as the client should see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message names the problem.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed to touch this resource.
    #[error("{0}")]
    Forbidden(String),
    /// The named object does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The body exceeds the limit stated in the message.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body has a content type this route does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too many requests; try again after `retry_by`.
    #[error("{message}")]
    RateLimited {
        /// Human-readable reason.
        message: String,
        /// When the caller may try again.
        retry_by: DateTime<Utc>,
    },
    /// A dependency (the database) is unavailable; the caller should retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// An internal error carrying its cause for the log.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(cause.into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// How long a caller turned away by an outage of the database is asked to wait.
const OUTAGE_RETRY_SECONDS: i64 = 5;

/// The contract's error code for a status.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BAD_REQUEST",
        StatusCode::UNAUTHORIZED => "UNAUTHORIZED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::REQUEST_TIMEOUT => "REQUEST_TIMEOUT",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "BAD_REQUEST",
        StatusCode::TOO_MANY_REQUESTS => "RATE_LIMIT_EXCEEDED",
        StatusCode::SERVICE_UNAVAILABLE => "SERVICE_UNAVAILABLE",
        s if s.is_client_error() => "BAD_REQUEST",
        _ => "INTERNAL_ERROR",
    }
}

/// The contract's error envelope.
pub fn error_body(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"success": false, "data": {"message": message, "code": code_for(status)}})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                error_body(status, "Internal error; the cause has been logged")
            }
            ApiError::RateLimited { message, retry_by } => {
                // Rounded up: a caller honouring Retry-After must not come back before retry_by.
                let millis = (retry_by - Utc::now()).num_milliseconds();
                let seconds = ((millis + 999) / 1000).max(1);
                let retry_by = retry_by.to_rfc3339_opts(SecondsFormat::Millis, true);
                let mut response = (
                    status,
                    Json(json!({"success": false, "data": {
                        "message": message, "code": code_for(status), "retry_by": retry_by}})),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                response
            }
            ApiError::Unavailable(message) => {
                let mut response = error_body(status, &message);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(OUTAGE_RETRY_SECONDS));
                response
            }
            other => error_body(status, &other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Arc::new(error).into()
    }
}

/// A failure shared by several requests (a batch of webhook inserts) answers each of them as it
/// would have answered a request of its own.
impl From<Arc<sqlx::Error>> for ApiError {
    fn from(error: Arc<sqlx::Error>) -> Self {
        if crate::store::is_unavailable(&error) {
            tracing::warn!(error = %error, "database unavailable");
            ApiError::Unavailable("The database is unavailable; retry shortly".into())
        } else if is_data_exception(&error) {
            // A value of the request PostgreSQL cannot hold (a NUL character, a number or time
            // out of range): the request is at fault, and the database's wording stays here.
            tracing::info!(error = %error, "request value refused by the database");
            ApiError::BadRequest(
                "A value in the request cannot be stored (a NUL character, or a number or time out of range)"
                    .into(),
            )
        } else {
            ApiError::Internal(error.into())
        }
    }
}

/// SQLSTATE class 22: the values sent, not the query, are wrong.
fn is_data_exception(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")))
}

/// Middleware of the provider endpoints: an outage (503) is answered as throttling, the
/// contract's 429 `RATE_LIMIT_EXCEEDED` with a `retry_by`. The provider contract lists no 5xx for
/// any endpoint, and 429 is the one answer in it that tells Pipedrive when to try again. Meta's
/// webhooks keep their 503, which Meta retries.
pub async fn outage_as_rate_limit(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::SERVICE_UNAVAILABLE {
        return response;
    }
    let message = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|body| body["data"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "The service is unavailable; retry shortly".into());
    ApiError::RateLimited {
        message,
        retry_by: Utc::now() + TimeDelta::seconds(OUTAGE_RETRY_SECONDS),
    }
    .into_response()
}

/// Rewrites error responses produced outside our handlers (body limits, timeouts, routing,
/// extractor rejections) into the JSON envelope, so every failure has the same shape.
pub async fn normalize_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).trim().to_string(),
        _ => default_message(status).to_string(),
    };
    let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        "Internal error; the cause has been logged".to_string()
    } else {
        text
    };
    let mut rebuilt = error_body(status, &message);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rebuilt
}

fn default_message(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "No such route",
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed on this route",
        StatusCode::REQUEST_TIMEOUT => "The request took too long",
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large",
        _ => status.canonical_reason().unwrap_or("Request failed"),
    }
}

/// JSON 404 for paths no route matches.
pub async fn no_route() -> Response {
    error_body(StatusCode::NOT_FOUND, "No such route")
}

/// JSON 500 for a handler that panicked; the panic message is logged, not returned.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error; the cause has been logged",
    )
}
