//! The transcript of a conversation-day as note HTML: a heading, then per message its time
//! (UTC), direction, sender, text (escaped), links to its files (long-lived signed links to our
//! viewer page) and, for ours, the delivery ticks or the failure reason. Only tags that
//! Pipedrive's note sanitiser keeps are used (`p`, `b`, `small`, `br`, `a`).
//!
//! Rendering is deterministic (the same messages give the same HTML), so an unchanged
//! transcript is recognised by its hash and never sent again. A day whose transcript outgrows
//! a note continues in further notes ("parts").

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::config::PublicUrl;
use crate::crypto::Keys;
use crate::http::html::escape;
use crate::media;
use crate::store::attachments::{Attachment, AttachmentStatus};
use crate::store::messages::{Direction, MessageRow, MessageStatus};

/// Largest note we write, in bytes of HTML; Pipedrive takes about 100,000 characters.
pub const NOTE_LIMIT: usize = 90_000;

/// Who talks in a conversation.
#[derive(Debug, Clone)]
pub struct Parties {
    /// The customer's name (WhatsApp profile, else the number).
    pub customer: String,
    /// The customer's number (E.164), when known.
    pub customer_phone: Option<String>,
    /// The business side (verified name or number).
    pub business: String,
}

/// Signs the viewer links of files.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    /// Signing keys.
    pub keys: &'a Keys,
    /// Base URL of this service.
    pub public_url: &'a PublicUrl,
}

impl Viewer<'_> {
    /// The file's viewer link; its expiry derives from the file's creation, so it is stable.
    fn link(&self, attachment: &Attachment) -> String {
        let expires_at = attachment.created_at.timestamp() + media::VIEW_LINK_TTL_SECONDS;
        media::view_url(self.keys, self.public_url, attachment.id, expires_at)
    }
}

/// One note's worth of a conversation-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The note's HTML.
    pub html: String,
    /// When its first message was sent (the note's time in Pipedrive).
    pub first_at: DateTime<Utc>,
}

/// The notes of a conversation-day's `messages` (oldest first, with their `attachments`).
pub fn render(
    parties: &Parties,
    day: NaiveDate,
    messages: &[MessageRow],
    attachments: &[Attachment],
    viewer: Viewer<'_>,
) -> Vec<Part> {
    let mut parts: Vec<(Vec<String>, DateTime<Utc>)> = Vec::new();
    let heading_room = heading(parties, day, 99).len();
    let mut size = 0;
    for message in messages {
        let own: Vec<&Attachment> = attachments
            .iter()
            .filter(|a| a.message_id == message.id)
            .collect();
        let block = block(parties, message, &own, viewer);
        match parts.last_mut() {
            Some((blocks, _)) if size + block.len() + heading_room <= NOTE_LIMIT => {
                size += block.len();
                blocks.push(block);
            }
            _ => {
                size = block.len();
                parts.push((vec![block], message.sent_at));
            }
        }
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(index, (blocks, first_at))| Part {
            html: format!("{}{}", heading(parties, day, index), blocks.concat()),
            first_at,
        })
        .collect()
}

/// A hash of everything a note receives: its HTML and what it is linked to.
pub fn content_hash(html: &str, links: &[impl AsRef<str>]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(html.as_bytes());
    for link in links {
        hasher.update(b"\n");
        hasher.update(link.as_ref().as_bytes());
    }
    hex::encode(hasher.finalize())
}

fn heading(parties: &Parties, day: NaiveDate, part: usize) -> String {
    let phone = parties
        .customer_phone
        .as_deref()
        .map(|p| format!(" ({})", escape(p)))
        .unwrap_or_default();
    let continued = if part > 0 {
        format!(", continued ({})", part + 1)
    } else {
        String::new()
    };
    format!(
        "<p><b>WhatsApp: {}{phone} ↔ {}</b><br><small>{} (UTC){continued}</small></p>",
        escape(&parties.customer),
        escape(&parties.business),
        day.format("%Y-%m-%d"),
    )
}

fn block(parties: &Parties, message: &MessageRow, files: &[&Attachment], viewer: Viewer<'_>) -> String {
    let (arrow, sender) = match message.direction {
        Direction::Inbound => ("←", &parties.customer),
        Direction::Outbound => ("→", &parties.business),
    };
    let mut html = format!(
        "<p><small>{}</small> {arrow} <b>{}</b>",
        message.sent_at.format("%H:%M"),
        escape(sender)
    );
    if message.direction == Direction::Outbound {
        html.push_str(&format!(" <small>{}</small>", escape(&ticks(message))));
    }
    if !message.body.is_empty() {
        html.push_str("<br>");
        html.push_str(&escape(&message.body).replace('\n', "<br>"));
    }
    for file in files {
        let name = escape(file.filename.as_deref().unwrap_or(&file.mime_type));
        html.push_str("<br>");
        match file.status {
            AttachmentStatus::Stored => html.push_str(&format!(
                "📎 <a href=\"{}\">{name}</a>",
                escape(&viewer.link(file))
            )),
            AttachmentStatus::Pending => html.push_str(&format!("📎 {name} (still downloading)")),
            AttachmentStatus::Failed => {
                html.push_str(&format!("⚠️ {name}: WhatsApp could not provide this file"))
            }
        }
    }
    html.push_str("</p>");
    html
}

/// The delivery state of one of our messages, as WhatsApp's ticks.
fn ticks(message: &MessageRow) -> String {
    match message.status {
        MessageStatus::Queued | MessageStatus::Sending => "🕓 sending".into(),
        MessageStatus::Sent => "✓ sent".into(),
        MessageStatus::Delivered => "✓✓ delivered".into(),
        MessageStatus::Read => "✓✓ read".into(),
        MessageStatus::Failed => {
            let code = message.error_code.map(|c| format!(" ({c})")).unwrap_or_default();
            let reason = message
                .error_detail
                .as_deref()
                .or(message.error_title.as_deref())
                .unwrap_or("unknown reason");
            format!("⚠️ not delivered{code}: {reason}")
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use uuid::Uuid;

    use super::*;
    use crate::config::SecretKey;

    fn keys() -> Keys {
        Keys::new(&SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])).unwrap())
    }

    fn parties() -> Parties {
        Parties {
            customer: "Ana <3".into(),
            customer_phone: Some("+5511987654321".into()),
            business: "Acme Support".into(),
        }
    }

    fn message(direction: Direction, body: &str, minute: u32, status: MessageStatus) -> MessageRow {
        MessageRow {
            id: Uuid::now_v7(),
            conversation_id: Uuid::nil(),
            channel_id: Uuid::nil(),
            direction,
            sender_id: "x".into(),
            kind: "text".into(),
            body: body.into(),
            status,
            error_code: Some(131047),
            error_title: Some("Re-engagement message".into()),
            error_detail: None,
            sent_at: DateTime::parse_from_rfc3339(&format!("2026-11-24T09:{minute:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc),
            has_files: false,
        }
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 24).unwrap()
    }

    #[test]
    fn a_transcript_shows_time_direction_sender_text_and_ticks() {
        let keys = keys();
        let url = PublicUrl::parse("https://wa.example.com").unwrap();
        let viewer = Viewer {
            keys: &keys,
            public_url: &url,
        };
        let inbound = message(
            Direction::Inbound,
            "Hi <b>there</b>\nsecond line",
            5,
            MessageStatus::Sent,
        );
        let read = message(Direction::Outbound, "Our offer", 6, MessageStatus::Read);
        let failed = message(Direction::Outbound, "Late", 7, MessageStatus::Failed);
        let file = Attachment {
            id: Uuid::now_v7(),
            message_id: inbound.id,
            position: 0,
            media_id: None,
            mime_type: "application/pdf".into(),
            filename: Some("quote.pdf".into()),
            size_bytes: Some(3),
            sha256: None,
            status: AttachmentStatus::Stored,
            error: None,
            created_at: inbound.sent_at,
        };
        let rows = [inbound, read, failed];
        let parts = render(&parties(), day(), &rows, std::slice::from_ref(&file), viewer);
        assert_eq!(parts.len(), 1);
        let html = &parts[0].html;
        assert!(html.starts_with("<p><b>WhatsApp: Ana &lt;3 (+5511987654321) ↔ Acme Support</b><br><small>2026-11-24 (UTC)</small></p>"), "{html}");
        assert!(html.contains("<p><small>09:05</small> ← <b>Ana &lt;3</b><br>Hi &lt;b&gt;there&lt;/b&gt;<br>second line<br>📎 <a href=\"https://wa.example.com/media/"), "{html}");
        assert!(html.contains("/view?exp="), "{html}");
        assert!(
            html.contains(
                "<p><small>09:06</small> → <b>Acme Support</b> <small>✓✓ read</small><br>Our offer</p>"
            ),
            "{html}"
        );
        assert!(
            html.contains("⚠️ not delivered (131047): Re-engagement message"),
            "{html}"
        );
        assert_eq!(parts[0].first_at, rows[0].sent_at);
        let again = render(&parties(), day(), &rows, &[file], viewer);
        assert_eq!(again, parts, "rendering is stable");
    }

    #[test]
    fn a_long_day_rolls_over_into_further_notes() {
        let keys = keys();
        let url = PublicUrl::parse("https://wa.example.com").unwrap();
        let viewer = Viewer {
            keys: &keys,
            public_url: &url,
        };
        let text = "x".repeat(4_000);
        let rows: Vec<MessageRow> = (0..50)
            .map(|i| message(Direction::Inbound, &text, i, MessageStatus::Sent))
            .collect();
        let parts = render(&parties(), day(), &rows, &[], viewer);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.html.len() <= NOTE_LIMIT));
        assert!(parts[1].html.contains("continued (2)"));
        let total: usize = parts.iter().map(|p| p.html.matches(&text).count()).sum();
        assert_eq!(total, 50, "every message in exactly one note");
        assert_eq!(parts[1].first_at, rows[22].sent_at);
    }

    #[test]
    fn hashes_cover_content_and_links() {
        assert_eq!(content_hash("a", &["1"]), content_hash("a", &["1"]));
        assert_ne!(content_hash("a", &["1"]), content_hash("a", &["2"]));
        assert_ne!(content_hash("a", &["1"]), content_hash("b", &["1"]));
    }
}
