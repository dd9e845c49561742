//! The multipart/form-data body of `postMessage` (`message`, `senderId`, `conversationId`,
//! `recipientIds`, `files`), read into its fields. Kept apart from the handler so that it can be
//! exercised with arbitrary bytes.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header;

use crate::http::error::ApiError;
use crate::http::upload::{self, multipart_error};
use crate::whatsapp::outbound::NewFile;

/// The form, as read.
#[derive(Debug, Default)]
pub struct MessageForm {
    /// The text.
    pub message: Option<String>,
    /// Who sends it (our business participant).
    pub sender_id: Option<String>,
    /// Our conversation id.
    pub conversation_id: Option<String>,
    /// Participant ids of the recipients.
    pub recipient_ids: Vec<String>,
    /// Attached files.
    pub files: Vec<NewFile>,
}

/// Reads the form of `request`: 415 for another content type, 400 for a malformed body, 413
/// past the route's body limit.
pub async fn read(request: Request) -> Result<MessageForm, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(
            "postMessage takes multipart/form-data".into(),
        ));
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("Malformed multipart body: {}", e.body_text())))?;
    let mut form = MessageForm::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "message" => form.message = Some(upload::text(field, "message").await?),
            "senderId" => form.sender_id = Some(upload::text(field, "senderId").await?),
            "conversationId" => form.conversation_id = Some(upload::text(field, "conversationId").await?),
            "recipientIds" | "recipientIds[]" => {
                let value = upload::text(field, "recipientIds").await?;
                form.recipient_ids.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
            "files" | "files[]" | "file" => form.files.push(upload::file(field).await?),
            other => tracing::info!(field = other, "postMessage: unknown form field ignored"),
        }
    }
    Ok(form)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(content_type: &str, body: &'static [u8]) -> Request {
        Request::builder()
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn reads_fields_lists_and_files() {
        let body = b"--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nHi\r\n\
--b\r\nContent-Disposition: form-data; name=\"recipientIds[]\"\r\n\r\na, b,\r\n\
--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"q.pdf\"\r\n\r\n%PDF\r\n--b--\r\n";
        let form = read(request("multipart/form-data; boundary=b", body))
            .await
            .unwrap();
        assert_eq!(form.message.as_deref(), Some("Hi"));
        assert_eq!(form.recipient_ids, ["a", "b"]);
        assert_eq!(form.files[0].mime_type, "application/pdf");
        assert_eq!(form.files[0].content, b"%PDF");
    }

    #[tokio::test]
    async fn other_types_and_broken_bodies_are_refused() {
        let json = read(request("application/json", b"{}")).await.unwrap_err();
        assert!(matches!(json, ApiError::UnsupportedMediaType(_)));
        let no_boundary = read(request("multipart/form-data", b"x")).await.unwrap_err();
        assert!(matches!(no_boundary, ApiError::BadRequest(_)));
        let truncated = read(request(
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\nHi",
        ))
        .await
        .unwrap_err();
        assert!(matches!(truncated, ApiError::BadRequest(_)));
        let not_utf8 = read(request(
            "multipart/form-data; boundary=b",
            b"--b\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n\xff\xfe\r\n--b--\r\n",
        ))
        .await
        .unwrap_err();
        assert!(matches!(not_utf8, ApiError::BadRequest(_)));
    }
}
