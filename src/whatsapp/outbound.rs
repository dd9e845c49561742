//! Messages written in Pipedrive, before they leave: checked against WhatsApp's rules (the
//! 24-hour window, templates, media types and sizes), then stored with their files and queued,
//! so that nothing accepted is lost even if WhatsApp is unreachable.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::send;
use super::templates::{self, TemplateMatch};
use crate::pipedrive::wire::{self, REPLY_WINDOW};
use crate::queue::{self, NewJob};
use crate::store::channels::Channel;
use crate::store::conversations::{self, ConversationRow};
use crate::store::messages::{self, Direction, MessageStatus, NewMessage};
use crate::store::{attachments, templates::Template};

/// Longest text message WhatsApp takes.
pub const MAX_TEXT: usize = 4096;

/// How WhatsApp carries a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// JPEG or PNG.
    Image,
    /// MP4 or 3GPP.
    Video,
    /// AAC, AMR, MP3, MP4 audio or OGG/Opus.
    Audio,
    /// PDF, Office documents, plain text.
    Document,
    /// WebP.
    Sticker,
}

impl MediaKind {
    /// The message type name on the Graph API.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// Whether WhatsApp shows a caption with this kind.
    pub fn takes_caption(self) -> bool {
        matches!(self, MediaKind::Image | MediaKind::Video | MediaKind::Document)
    }
}

const MB: u64 = 1024 * 1024;

/// WhatsApp's type and size limit for a MIME type; `None` when WhatsApp refuses the type.
pub fn classify(mime_type: &str) -> Option<(MediaKind, u64)> {
    let base = crate::media::base_type(mime_type);
    Some(match base.as_str() {
        "image/jpeg" | "image/png" => (MediaKind::Image, 5 * MB),
        "image/webp" => (MediaKind::Sticker, 500 * 1024),
        "video/mp4" | "video/3gpp" => (MediaKind::Video, 16 * MB),
        "audio/aac" | "audio/amr" | "audio/mpeg" | "audio/mp4" | "audio/ogg" => (MediaKind::Audio, 16 * MB),
        "text/plain"
        | "application/pdf"
        | "application/vnd.ms-powerpoint"
        | "application/msword"
        | "application/vnd.ms-excel"
        | "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        | "application/vnd.openxmlformats-officedocument.presentationml.presentation"
        | "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
            (MediaKind::Document, 100 * MB)
        }
        _ => return None,
    })
}

/// The MIME type for a file whose declared type is missing or generic, from its extension.
pub fn mime_from_name(filename: &str) -> Option<&'static str> {
    let ext = filename.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "3gp" => "video/3gpp",
        "aac" => "audio/aac",
        "amr" => "audio/amr",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "opus" => "audio/ogg",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "ppt" => "application/vnd.ms-powerpoint",
        "doc" => "application/msword",
        "xls" => "application/vnd.ms-excel",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => return None,
    })
}

/// A file attached in Pipedrive.
#[derive(Debug, Clone)]
pub struct NewFile {
    /// File name.
    pub filename: Option<String>,
    /// MIME type (resolved).
    pub mime_type: String,
    /// The bytes.
    pub content: Vec<u8>,
}

/// Why a message cannot be sent; the text is shown to the salesperson.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Neither text nor files.
    #[error("message: the message is empty and has no files")]
    Empty,
    /// Text over WhatsApp's limit.
    #[error("message: {0} characters is more than WhatsApp's limit of {MAX_TEXT}")]
    TooLong(usize),
    /// A file type WhatsApp refuses.
    #[error(
        "files: {name} has type {mime_type}, which WhatsApp does not accept (images: JPEG/PNG; video: MP4/3GPP; audio: AAC/AMR/MP3/M4A/OGG; documents: PDF, Word, Excel, PowerPoint, plain text)"
    )]
    UnsupportedFile {
        /// File name.
        name: String,
        /// Its type.
        mime_type: String,
    },
    /// A file over WhatsApp's size limit for its kind.
    #[error("files: {name} is {size} bytes; WhatsApp accepts {kind} files of at most {limit_mb} MB")]
    TooLarge {
        /// File name.
        name: String,
        /// Its size.
        size: usize,
        /// The limit in MB.
        limit_mb: String,
        /// Media kind.
        kind: &'static str,
    },
    /// Free-form message outside the customer service window.
    #[error(
        "The customer's 24-hour service window {closed}; WhatsApp only allows an approved template now. Choose one from the template list."
    )]
    WindowClosed {
        /// When it closed, in words.
        closed: String,
    },
}

/// Creating the message failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// WhatsApp's rules forbid it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Storing failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The message was stored and queued.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    /// Our message id (what Pipedrive gets back).
    pub message_id: Uuid,
    /// The send job.
    pub job_id: i64,
}

/// Checks a file against WhatsApp's types and limits.
pub fn check_file(file: &NewFile) -> Result<MediaKind, Refusal> {
    let name = file.filename.clone().unwrap_or_else(|| "a file".into());
    let (kind, limit) = classify(&file.mime_type).ok_or_else(|| Refusal::UnsupportedFile {
        name: name.clone(),
        mime_type: file.mime_type.clone(),
    })?;
    if file.content.len() as u64 > limit {
        return Err(Refusal::TooLarge {
            name,
            size: file.content.len(),
            limit_mb: format!("{:.1}", limit as f64 / MB as f64)
                .trim_end_matches(".0")
                .into(),
            kind: kind.as_str(),
        });
    }
    Ok(kind)
}

/// Whether the customer can still be written to freely at `now`.
pub fn window_open(last_inbound_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_inbound_at.is_some_and(|at| at + REPLY_WINDOW > now)
}

fn closed_in_words(last_inbound_at: Option<DateTime<Utc>>) -> String {
    match last_inbound_at {
        Some(at) => format!("closed at {} UTC", wire::timestamp(at + REPLY_WINDOW)),
        None => "was never opened (the customer has not written yet)".into(),
    }
}

/// Validates, stores and queues a message written in Pipedrive.
pub async fn create(
    db: &PgPool,
    channel: &Channel,
    conversation: &ConversationRow,
    text: &str,
    files: Vec<NewFile>,
    approved_templates: &[Template],
) -> Result<Queued, OutboundError> {
    let text = text.trim();
    if text.is_empty() && files.is_empty() {
        return Err(Refusal::Empty.into());
    }
    if text.chars().count() > MAX_TEXT {
        return Err(Refusal::TooLong(text.chars().count()).into());
    }
    let kinds = files.iter().map(check_file).collect::<Result<Vec<_>, _>>()?;
    let template = if files.is_empty() {
        templates::find_match(approved_templates, text)
    } else {
        None
    };
    let now = Utc::now();
    if template.is_none() && !window_open(conversation.last_inbound_at, now) {
        return Err(Refusal::WindowClosed {
            closed: closed_in_words(conversation.last_inbound_at),
        }
        .into());
    }

    let message_id = Uuid::now_v7();
    let kind = match (&template, kinds.first()) {
        (Some(_), _) => "template",
        (None, Some(kind)) => kind.as_str(),
        (None, None) => "text",
    };
    let body = if text.is_empty() {
        files
            .iter()
            .map(|f| format!("📎 {}", f.filename.as_deref().unwrap_or("file")))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        text.to_string()
    };
    // The typed text is kept apart from the displayed body (which names the files when the
    // text is empty), so the sender knows what to put in front of the customer.
    let raw = json!({"text": text, "template": template.as_ref().map(template_json)});
    let mut tx = db.begin().await?;
    messages::insert(
        &mut tx,
        &NewMessage {
            id: message_id,
            conversation_id: conversation.id,
            channel_id: channel.id,
            direction: Direction::Outbound,
            wamid: None,
            sender_id: &channel.phone_number_id,
            kind,
            body: &body,
            raw: Some(&raw),
            status: MessageStatus::Queued,
            reply_to_wamid: None,
            sent_at: now,
        },
    )
    .await?;
    for (position, file) in files.iter().enumerate() {
        attachments::insert_stored(
            &mut tx,
            message_id,
            position as i32,
            &file.mime_type,
            file.filename.as_deref(),
            &file.content,
        )
        .await?;
    }
    conversations::record_outbound(&mut tx, conversation.id, now).await?;
    // Sends to one customer go out one at a time, in order (WhatsApp's pair rate limit). The
    // job is left to the request for a while (it sends at once to report refusals); workers take
    // it only if the request could not.
    let job_id = queue::enqueue(
        &mut tx,
        NewJob::new(send::KIND, &json!({"message_id": message_id}))
            .ordered_by(format!("send:{}", conversation.id))
            .dedup(format!("send:{message_id}"))
            .run_at(now + chrono::Duration::seconds(60)),
    )
    .await?
    .expect("a fresh message id is never a duplicate");
    tx.commit().await?;
    metrics::counter!("messages_sent_total", "type" => kind).increment(1);
    Ok(Queued { message_id, job_id })
}

fn template_json(m: &TemplateMatch) -> serde_json::Value {
    json!({
        "name": m.template.name,
        "language": m.template.language,
        "names": m.names,
        "values": m.values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_against_whatsapps_types_and_limits() {
        let file = |mime: &str, size: usize| NewFile {
            filename: Some("f".into()),
            mime_type: mime.into(),
            content: vec![0; size],
        };
        assert_eq!(check_file(&file("image/png", 1000)).unwrap(), MediaKind::Image);
        assert_eq!(
            check_file(&file("application/pdf", 1000)).unwrap(),
            MediaKind::Document
        );
        assert_eq!(
            check_file(&file("audio/ogg; codecs=opus", 10)).unwrap(),
            MediaKind::Audio
        );
        let too_big = check_file(&file("image/jpeg", 5 * 1024 * 1024 + 1)).unwrap_err();
        assert!(
            too_big.to_string().contains("image files of at most 5 MB"),
            "{too_big}"
        );
        assert!(matches!(
            check_file(&file("image/heic", 10)),
            Err(Refusal::UnsupportedFile { .. })
        ));
    }

    #[test]
    fn the_window_is_24_hours_from_the_last_customer_message() {
        let now = Utc::now();
        assert!(window_open(Some(now - chrono::Duration::hours(23)), now));
        assert!(!window_open(Some(now - chrono::Duration::hours(25)), now));
        assert!(!window_open(None, now));
    }

    #[test]
    fn generic_types_are_resolved_from_the_extension() {
        assert_eq!(mime_from_name("Quote.PDF"), Some("application/pdf"));
        assert_eq!(mime_from_name("photo.jpeg"), Some("image/jpeg"));
        assert_eq!(mime_from_name("noext"), None);
    }
}
