//! The shapes of Pipedrive's messaging contract (conversation, message, participant,
//! attachment), built from stored rows. Shared by the provider endpoints and by deliveries, so
//! Pipedrive sees a message the same way whichever path brought it.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::PublicUrl;
use crate::crypto::Keys;
use crate::media;
use crate::store::attachments::{Attachment, AttachmentStatus};
use crate::store::channels::Channel;
use crate::store::conversations::ConversationRow;
use crate::store::messages::{Direction, MessageRow};

/// Length of WhatsApp's customer service window.
pub const REPLY_WINDOW: Duration = Duration::hours(24);

/// A time as the contract writes it: UTC, `YYYY-MM-DD HH:MM`.
pub fn timestamp(at: DateTime<Utc>) -> String {
    // Written digit by digit: a page of 30 × 30 messages writes 1,800 of them, and the
    // formatting machinery (a `strftime` pattern before, `format!` since) cost more than the
    // rest of the rendering of those fields. The fields are read off the naive time: read off
    // a `DateTime`, each of the five adds the (zero) UTC offset anew.
    let at = at.naive_utc();
    let mut out = String::with_capacity(16);
    let year = at.year();
    if year < 0 {
        // As `{:04}` does, the sign of a year before 1 BCE counts towards the four places.
        out.push('-');
        push_padded(&mut out, year.unsigned_abs(), 3);
    } else {
        push_padded(&mut out, year.unsigned_abs(), 4);
    }
    out.push('-');
    push_padded(&mut out, at.month(), 2);
    out.push('-');
    push_padded(&mut out, at.day(), 2);
    out.push(' ');
    push_padded(&mut out, at.hour(), 2);
    out.push(':');
    push_padded(&mut out, at.minute(), 2);
    out
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut String, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut rest = n;
    let mut start = digits.len();
    while rest > 0 || start > digits.len() - width {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend(digits[start..].iter().map(|&d| char::from(d)));
}

/// A message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Our message id.
    pub id: String,
    /// sent, delivered, read or failed.
    pub status: String,
    /// When it was sent (UTC, `YYYY-MM-DD HH:MM`).
    pub created_at: String,
    /// The text.
    pub message: String,
    /// Participant id of the writer.
    pub sender_id: String,
    /// After this the customer can no longer be answered freely (inbound messages).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reply_by: Option<String>,
    /// Files.
    pub attachments: Vec<WireAttachment>,
}

/// An attachment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireAttachment {
    /// Our attachment id.
    pub id: String,
    /// MIME type.
    #[serde(rename = "type")]
    pub mime_type: String,
    /// File name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// Size in bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<i64>,
    /// Signed, expiring URL.
    pub url: String,
    /// The URL expires; Pipedrive asks getMessageById for a fresh one.
    pub link_expires: bool,
    /// Preview picture (images).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub preview_url: Option<String>,
}

/// A participant of a conversation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Participant {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `source_user` (the business number) or `end_user` (the customer).
    pub role: String,
    /// Generated initials avatar.
    pub avatar_url: String,
}

/// A conversation with a page of its messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    /// Our conversation id.
    pub id: String,
    /// External link (none: the chat lives in Pipedrive).
    pub link: String,
    /// open or closed.
    pub status: String,
    /// Seen by a salesperson.
    pub seen: bool,
    /// Cursor for older messages; empty when there are none.
    pub next_messages_cursor: String,
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// Exactly one source_user and one end_user.
    pub participants: Vec<Participant>,
}

/// Signs the links a response hands out.
#[derive(Clone, Copy)]
pub struct Links<'a> {
    /// Signing keys.
    pub keys: &'a Keys,
    /// Base URL of this service.
    pub public_url: &'a PublicUrl,
}

impl Links<'_> {
    fn attachment(&self, id: Uuid) -> String {
        media::signed_url(self.keys, self.public_url, id, media::LINK_TTL_SECONDS)
    }

    /// URL of a participant's avatar.
    pub fn avatar(&self, participant_id: &str) -> String {
        self.public_url.join(&format!("/avatars/{participant_id}.svg"))
    }
}

/// The business side of a channel's conversations.
pub fn business_name(channel: &Channel) -> String {
    channel
        .verified_name
        .clone()
        .or_else(|| {
            channel
                .display_phone_number
                .as_ref()
                .map(|n| format!("WhatsApp {n}"))
        })
        .unwrap_or_else(|| format!("WhatsApp {}", channel.phone_number_id))
}

/// The customer's display name: WhatsApp profile name, else the number.
pub fn customer_name(profile_name: Option<&str>, wa_id: Option<&str>, bsuid: Option<&str>) -> String {
    profile_name
        .map(str::to_string)
        .or_else(|| wa_id.map(|w| format!("+{w}")))
        .or_else(|| bsuid.map(str::to_string))
        .unwrap_or_else(|| "WhatsApp user".into())
}

/// The two participants of a conversation.
pub fn participants(channel: &Channel, conversation: &ConversationRow, links: Links<'_>) -> Vec<Participant> {
    let customer = conversation.contact_id.to_string();
    vec![
        Participant {
            id: channel.phone_number_id.clone(),
            name: business_name(channel),
            role: "source_user".into(),
            avatar_url: links.avatar(&channel.phone_number_id),
        },
        Participant {
            name: customer_name(
                conversation.profile_name.as_deref(),
                conversation.wa_id.as_deref(),
                conversation.bsuid.as_deref(),
            ),
            avatar_url: links.avatar(&customer),
            id: customer,
            role: "end_user".into(),
        },
    ]
}

/// A message with its stored attachments as signed links; failures are spelled out in the
/// text, since Pipedrive shows only text and files.
pub fn message(row: MessageRow, attachments: &[&Attachment], links: Links<'_>) -> Message {
    let mut text = row.body;
    let mut files = Vec::new();
    for attachment in attachments {
        match attachment.status {
            AttachmentStatus::Stored => {
                let url = links.attachment(attachment.id);
                let image = attachment.mime_type.starts_with("image/");
                files.push(WireAttachment {
                    id: attachment.id.to_string(),
                    mime_type: attachment.mime_type.clone(),
                    name: attachment.filename.clone(),
                    size: attachment.size_bytes,
                    preview_url: image.then(|| url.clone()),
                    url,
                    link_expires: true,
                });
            }
            AttachmentStatus::Failed => text.push_str(&format!(
                "\n⚠️ A file ({}) could not be fetched from WhatsApp; ask the customer to send it again",
                attachment.filename.as_deref().unwrap_or(&attachment.mime_type)
            )),
            AttachmentStatus::Pending => {}
        }
    }
    if row.status == crate::store::messages::MessageStatus::Failed {
        let code = row.error_code.map(|c| format!(" ({c})")).unwrap_or_default();
        let reason = row
            .error_detail
            .as_deref()
            .or(row.error_title.as_deref())
            .unwrap_or("unknown reason");
        text.push_str(&format!("\n⚠️ Not delivered{code}: {reason}"));
    }
    Message {
        id: row.id.to_string(),
        status: row.status.for_pipedrive().into(),
        created_at: timestamp(row.sent_at),
        message: text,
        sender_id: row.sender_id,
        reply_by: (row.direction == Direction::Inbound)
            .then(|| row.sent_at.checked_add_signed(REPLY_WINDOW))
            .flatten()
            .map(timestamp),
        attachments: files,
    }
}

/// The attachments of a page's messages, by message.
pub struct Files<'a>(HashMap<Uuid, Vec<&'a Attachment>>);

impl<'a> Files<'a> {
    /// Groups `attachments` once: a page of 30 × 30 messages scanned all of its files for each
    /// of its messages.
    pub fn of(attachments: &'a [Attachment]) -> Self {
        let mut by_message: HashMap<Uuid, Vec<&Attachment>> = HashMap::new();
        for attachment in attachments {
            by_message
                .entry(attachment.message_id)
                .or_default()
                .push(attachment);
        }
        Self(by_message)
    }

    fn of_message(&self, id: Uuid) -> &[&'a Attachment] {
        self.0.get(&id).map(Vec::as_slice).unwrap_or_default()
    }
}

/// Builds wire messages out of `rows`, with each one's attachments out of `files`.
pub fn messages(rows: Vec<MessageRow>, files: &Files<'_>, links: Links<'_>) -> Vec<Message> {
    rows.into_iter()
        .map(|row| {
            let own = files.of_message(row.id);
            message(row, own, links)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_contract_format() {
        let at = DateTime::from_timestamp(1_763_800_000, 0).unwrap();
        assert_eq!(timestamp(at), "2025-11-22 08:26");
        let padded = DateTime::from_timestamp(1_767_330_245, 0).unwrap();
        assert_eq!(timestamp(padded), "2026-01-02 05:04");
        let late = DateTime::from_timestamp(253_402_300_799, 0).unwrap();
        assert_eq!(timestamp(late), "9999-12-31 23:59");
    }

    #[test]
    fn customer_names_fall_back_to_the_number() {
        assert_eq!(customer_name(Some("Ana"), Some("55"), None), "Ana");
        assert_eq!(customer_name(None, Some("5511"), None), "+5511");
        assert_eq!(customer_name(None, None, Some("BR.1")), "BR.1");
    }
}
