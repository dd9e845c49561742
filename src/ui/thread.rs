//! A WhatsApp thread as the chat shows it: the customer, our number, the 24-hour window, the
//! newest messages with their files, delivery ticks and failure reasons. Built from the store,
//! rendered to HTML here only (the page's script swaps the rendered parts in as they change),
//! and also returned as data by the page's API.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::PublicUrl;
use crate::crypto::Keys;
use crate::http::html::escape;
use crate::media;
use crate::pipedrive::wire::{self, REPLY_WINDOW};
use crate::store::attachments::{self, Attachment, AttachmentStatus};
use crate::store::channels::{self, Channel};
use crate::store::conversations::ConversationRow;
use crate::store::messages::{self, Direction, MessageRow, MessageStatus};
use crate::whatsapp::outbound::window_open;

/// Messages shown per thread (the newest).
const SHOWN_MESSAGES: i64 = 50;

/// A thread.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    /// Our conversation id.
    pub id: Uuid,
    /// The customer's WhatsApp name, or their number.
    pub customer: String,
    /// The customer's number (E.164), when known.
    pub phone: Option<String>,
    /// Our number the conversation is on.
    pub channel: String,
    /// Whether a salesperson has looked at it.
    pub seen: bool,
    /// Whether free text may be sent (WhatsApp's 24-hour customer service window).
    pub window_open: bool,
    /// When the window closes (or closed); none before the customer's first message.
    pub window_ends_at: Option<DateTime<Utc>>,
    /// When the last message was sent.
    pub last_message_at: DateTime<Utc>,
    /// The newest messages, oldest first.
    pub messages: Vec<MessageView>,
    /// The thread rendered for the page.
    pub html: String,
}

/// A message.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    /// Our message id.
    pub id: Uuid,
    /// inbound (the customer) or outbound (us).
    pub direction: Direction,
    /// Who wrote it.
    pub sender: String,
    /// Its text.
    pub text: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Delivery status.
    pub status: MessageStatus,
    /// Why it was not delivered.
    pub failure: Option<String>,
    /// Its files.
    pub files: Vec<FileView>,
}

/// A file of a message.
#[derive(Debug, Clone, Serialize)]
pub struct FileView {
    /// File name, or a name made from its type.
    pub name: String,
    /// MIME type.
    pub mime_type: String,
    /// Signed link, once the bytes are stored.
    pub url: Option<String>,
    /// pending, stored or failed.
    pub state: AttachmentStatus,
}

/// Signs the media links of the threads.
#[derive(Clone, Copy)]
pub struct Links<'a> {
    /// Signing keys.
    pub keys: &'a Keys,
    /// Base URL of this service.
    pub public_url: &'a PublicUrl,
}

/// The threads of `conversations` (in that order) with their newest messages.
pub async fn load(
    db: &PgPool,
    links: Links<'_>,
    conversations: &[ConversationRow],
) -> Result<Vec<Thread>, sqlx::Error> {
    if conversations.is_empty() {
        return Ok(Vec::new());
    }
    let channels: HashMap<Uuid, Channel> = channels::list(db).await?.into_iter().map(|c| (c.id, c)).collect();
    let ids: Vec<Uuid> = conversations.iter().map(|c| c.id).collect();
    let mut by_conversation: HashMap<Uuid, Vec<MessageRow>> = HashMap::new();
    for message in messages::latest_of(db, &ids, SHOWN_MESSAGES).await? {
        by_conversation
            .entry(message.conversation_id)
            .or_default()
            .push(message);
    }
    let message_ids: Vec<Uuid> = by_conversation.values().flatten().map(|m| m.id).collect();
    let mut files: HashMap<Uuid, Vec<Attachment>> = HashMap::new();
    for attachment in attachments::of_messages(db, &message_ids).await? {
        files.entry(attachment.message_id).or_default().push(attachment);
    }
    let now = Utc::now();
    Ok(conversations
        .iter()
        .map(|conversation| {
            let mut newest_first = by_conversation.remove(&conversation.id).unwrap_or_default();
            newest_first.reverse();
            build(
                conversation,
                channels.get(&conversation.channel_id),
                newest_first,
                &files,
                links,
                now,
            )
        })
        .collect())
}

/// The customer's display name: their WhatsApp name, else their number.
pub fn customer_name(conversation: &ConversationRow) -> String {
    conversation
        .profile_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| conversation.wa_id.as_ref().map(|w| format!("+{w}")))
        .unwrap_or_else(|| "WhatsApp user".into())
}

/// Our side's display name on a channel.
fn business_name(channel: Option<&Channel>) -> String {
    channel
        .and_then(|c| c.verified_name.clone().or_else(|| c.display_phone_number.clone()))
        .unwrap_or_else(|| "You".into())
}

fn build(
    conversation: &ConversationRow,
    channel: Option<&Channel>,
    messages: Vec<MessageRow>,
    files: &HashMap<Uuid, Vec<Attachment>>,
    links: Links<'_>,
    now: DateTime<Utc>,
) -> Thread {
    let customer = customer_name(conversation);
    let business = business_name(channel);
    let messages = messages
        .into_iter()
        .map(|m| MessageView {
            id: m.id,
            direction: m.direction,
            sender: match m.direction {
                Direction::Inbound => customer.clone(),
                Direction::Outbound => business.clone(),
            },
            failure: (m.status == MessageStatus::Failed).then(|| failure_reason(&m)),
            files: files
                .get(&m.id)
                .into_iter()
                .flatten()
                .map(|a| file_view(a, links))
                .collect(),
            text: m.body,
            sent_at: m.sent_at,
            status: m.status,
        })
        .collect();
    let mut thread = Thread {
        id: conversation.id,
        phone: conversation.wa_id.as_ref().map(|w| format!("+{w}")),
        customer,
        channel: channel
            .and_then(|c| c.display_phone_number.clone())
            .unwrap_or_else(|| "WhatsApp".into()),
        seen: conversation.seen,
        window_open: window_open(conversation.last_inbound_at, now),
        window_ends_at: conversation.last_inbound_at.map(|at| at + REPLY_WINDOW),
        last_message_at: conversation.last_message_at,
        messages,
        html: String::new(),
    };
    thread.html = render(&thread);
    thread
}

fn failure_reason(m: &MessageRow) -> String {
    let reason = [m.error_title.as_deref(), m.error_detail.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.trim().is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    match (reason.is_empty(), m.error_code) {
        (false, Some(code)) => format!("{reason} (WhatsApp error {code})"),
        (false, None) => reason,
        (true, Some(code)) => format!("WhatsApp error {code}"),
        (true, None) => "WhatsApp did not deliver it".into(),
    }
}

fn file_view(a: &Attachment, links: Links<'_>) -> FileView {
    FileView {
        name: a
            .filename
            .clone()
            .unwrap_or_else(|| a.mime_type.split('/').next().unwrap_or("file").to_string()),
        mime_type: a.mime_type.clone(),
        url: (a.status == AttachmentStatus::Stored)
            .then(|| media::stable_signed_url(links.keys, links.public_url, a.id, media::LINK_TTL_SECONDS)),
        state: a.status,
    }
}

/// A time as the page shows it before its script turns it into the viewer's local time.
pub fn time(at: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{} UTC</time>",
        at.to_rfc3339(),
        wire::timestamp(at)
    )
}

fn ticks(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Queued | MessageStatus::Sending => "🕓 sending",
        MessageStatus::Sent => "✓ sent",
        MessageStatus::Delivered => "✓✓ delivered",
        MessageStatus::Read => "✓✓ read",
        MessageStatus::Failed => "⚠ not delivered",
    }
}

fn window_line(thread: &Thread) -> String {
    match (thread.window_open, thread.window_ends_at) {
        (true, Some(ends)) => format!("Reply window open until {}", time(ends)),
        (false, Some(ended)) => format!(
            "The 24-hour reply window closed at {}: only an approved template can be sent.",
            time(ended)
        ),
        _ => "The customer has not written yet: only an approved template can be sent.".into(),
    }
}

/// The thread section: header, messages and reply box. The script replaces the header and the
/// messages as they change and keeps the reply box (and what is being typed in it).
fn render(thread: &Thread) -> String {
    let mut html = String::new();
    let state = if thread.window_open {
        "window-open"
    } else {
        "window-closed"
    };
    let _ = write!(
        html,
        "<section class=\"thread {state}\" id=\"thread-{id}\" data-id=\"{id}\" data-seen=\"{seen}\">\
<header class=\"thread-head\"><h2>{customer}</h2><p class=\"who\">{phone} · via {channel}</p>\
<p class=\"window\">{window}</p></header><ol class=\"messages\">",
        id = thread.id,
        seen = thread.seen,
        customer = escape(&thread.customer),
        phone = escape(thread.phone.as_deref().unwrap_or("")),
        channel = escape(&thread.channel),
        window = window_line(thread),
    );
    if thread.messages.is_empty() {
        html.push_str("<li class=\"empty\">No messages yet.</li>");
    }
    for m in &thread.messages {
        render_message(&mut html, m);
    }
    let _ = write!(
        html,
        "</ol><form class=\"reply\" data-conversation=\"{id}\" enctype=\"multipart/form-data\">\
<div class=\"free\"><label class=\"visually-hidden\" for=\"text-{id}\">Reply</label>\
<textarea id=\"text-{id}\" name=\"text\" rows=\"2\" maxlength=\"4096\" placeholder=\"Write a reply…\"></textarea>\
<input type=\"file\" name=\"file\" multiple aria-label=\"Attach files\"></div>\
<div class=\"template\"><select name=\"template\" aria-label=\"Template\">\
<option value=\"\">Choose an approved template…</option></select><div class=\"params\"></div></div>\
<p class=\"error\" role=\"alert\" hidden></p><button type=\"submit\">Send</button></form></section>",
        id = thread.id,
    );
    html
}

fn render_message(html: &mut String, m: &MessageView) {
    let direction = match m.direction {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    };
    let status = serde_json::to_value(m.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = write!(
        html,
        "<li class=\"msg {direction} status-{status}\" data-id=\"{id}\"><p class=\"meta\">\
<span class=\"sender\">{sender}</span> {time}</p><p class=\"text\">{text}</p>",
        id = m.id,
        sender = escape(&m.sender),
        time = time(m.sent_at),
        text = escape(&m.text),
    );
    if !m.files.is_empty() {
        html.push_str("<ul class=\"files\">");
        for f in &m.files {
            let name = escape(&f.name);
            match (&f.url, f.state) {
                (Some(url), _) if f.mime_type.starts_with("image/") => {
                    let url = escape(url);
                    let _ = write!(
                        html,
                        "<li><a href=\"{url}\" target=\"_blank\" rel=\"noopener\"><img src=\"{url}\" alt=\"{name}\" loading=\"lazy\"></a></li>"
                    );
                }
                (Some(url), _) => {
                    let _ = write!(
                        html,
                        "<li><a href=\"{}\" target=\"_blank\" rel=\"noopener\">📎 {name}</a></li>",
                        escape(url)
                    );
                }
                (None, AttachmentStatus::Failed) => {
                    let _ = write!(html, "<li class=\"missing\">📎 {name} (not available)</li>");
                }
                (None, _) => {
                    let _ = write!(html, "<li class=\"missing\">📎 {name} (downloading…)</li>");
                }
            }
        }
        html.push_str("</ul>");
    }
    if m.direction == Direction::Outbound {
        let _ = write!(html, "<p class=\"ticks\">{}</p>", ticks(m.status));
    }
    if let Some(failure) = &m.failure {
        let _ = write!(html, "<p class=\"failure\">{}</p>", escape(failure));
    }
    html.push_str("</li>");
}

/// A short fingerprint of rendered HTML: the page asks again with it and gets "unchanged".
pub fn version<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}
