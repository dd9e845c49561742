//! Fields of multipart forms (postMessage, the chat panel's reply box): text that must be UTF-8,
//! and files read into [`NewFile`]s with a usable MIME type.

use axum::extract::multipart::{Field, MultipartError};
use axum::http::StatusCode;

use super::error::ApiError;
use crate::whatsapp::outbound::{self, NewFile};
use crate::whatsapp::reply::BODY_LIMIT;

/// A multipart failure as the client should see it: too large, or malformed.
pub fn multipart_error(error: MultipartError) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "The request is larger than {} MB",
            BODY_LIMIT / 1024 / 1024
        ))
    } else {
        ApiError::BadRequest(format!("Malformed multipart body: {}", error.body_text()))
    }
}

/// Reads a text field, which must be UTF-8: bytes that are not are refused rather than guessed
/// at, so the customer never receives mangled text.
pub async fn text(field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let bytes = field.bytes().await.map_err(multipart_error)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::BadRequest(format!("{name}: not valid UTF-8")))
}

/// Reads a file field. A missing or generic declared type is replaced by the one its name
/// implies, as browsers and Pipedrive often send `application/octet-stream`.
pub async fn file(field: Field<'_>) -> Result<NewFile, ApiError> {
    let filename = field.file_name().map(str::to_string);
    let declared = field.content_type().map(str::to_string);
    let content = field.bytes().await.map_err(multipart_error)?.to_vec();
    let generic = declared
        .as_deref()
        .is_none_or(|t| t.is_empty() || t == "application/octet-stream");
    let mime_type = match (generic, filename.as_deref().and_then(outbound::mime_from_name)) {
        (true, Some(guessed)) => guessed.to_string(),
        _ => declared.unwrap_or_else(|| "application/octet-stream".into()),
    };
    Ok(NewFile {
        filename,
        mime_type,
        content,
    })
}
