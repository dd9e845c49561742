//! getConversations, getConversationById, getMessageById and getSenderById, served from our
//! history with keyset pagination (newest first; messages of a page in chronological order).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Success, active, active_channel};
use crate::http::error::ApiError;
use crate::pipedrive::cursor::{self, Cursor, Kind};
use crate::pipedrive::wire::{self, Links};
use crate::state::AppState;
use crate::store::channels::Channel;
use crate::store::conversations::{self, ConversationRow};
use crate::store::{attachments, contacts, messages};

/// Page size when Pipedrive sends none.
const DEFAULT_LIMIT: i64 = 30;
/// Largest page served, whatever is asked.
const MAX_LIMIT: i64 = 100;

/// Start of a listing: after everything (later than any stored time, above any id).
fn from_the_top() -> Cursor {
    Cursor {
        at: DateTime::<Utc>::from_timestamp(253_402_300_799, 0).expect("9999-12-31 is a valid time"),
        id: Uuid::max(),
    }
}

/// The query parameters, read by hand so each bad one gets a 400 naming it.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<String>) -> Self {
        Self(
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn limit(&self, name: &str) -> Result<i64, ApiError> {
        match self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(n.min(MAX_LIMIT)),
                _ => Err(ApiError::BadRequest(format!(
                    "{name} must be a positive whole number (at most {MAX_LIMIT} is served), got {raw:?}"
                ))),
            },
        }
    }

    fn cursor(&self, kind: Kind, scope: Uuid) -> Result<Cursor, ApiError> {
        match self.0.get("after").map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(from_the_top()),
            Some(raw) => {
                cursor::decode(kind, scope, raw).map_err(|e| ApiError::BadRequest(format!("after: {e}")))
            }
        }
    }
}

fn links(state: &AppState) -> Links<'_> {
    Links {
        keys: &state.keys,
        public_url: &state.config.public_url,
    }
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound(format!("Unknown {what} {raw}")))
}

/// A conversation object with up to `limit` of its newest messages (given newest first, one
/// more than `limit` when older ones exist).
fn conversation_object(
    links: Links<'_>,
    channel: &Channel,
    conversation: &ConversationRow,
    mut newest_first: Vec<messages::MessageRow>,
    files: &wire::Files<'_>,
    limit: i64,
) -> wire::Conversation {
    let more = newest_first.len() as i64 > limit;
    newest_first.truncate(limit as usize);
    let next_messages_cursor = match newest_first.last() {
        Some(oldest) if more => cursor::encode(
            Kind::Messages,
            conversation.id,
            Cursor {
                at: oldest.sent_at,
                id: oldest.id,
            },
        ),
        _ => String::new(),
    };
    newest_first.reverse();
    wire::Conversation {
        id: conversation.id.to_string(),
        link: String::new(),
        status: conversation.status.clone(),
        seen: conversation.seen,
        next_messages_cursor,
        messages: wire::messages(newest_first, files, links),
        participants: wire::participants(channel, conversation, links),
    }
}

/// `getConversations`.
pub async fn conversations(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Success<Vec<wire::Conversation>>>, ApiError> {
    let params = Params::parse(query);
    let (conversations_limit, messages_limit) = (
        params.limit("conversations_limit")?,
        params.limit("messages_limit")?,
    );
    // One connection for the four statements: taken from the pool for each, they queued behind
    // other requests' statements between their own.
    let mut conn = state.db.acquire().await?;
    let channel = active_channel(&mut *conn, &channel).await?;
    let after = params.cursor(Kind::Conversations, channel.id)?;
    let mut rows = conversations::page(
        &mut *conn,
        channel.id,
        after.at,
        after.id,
        conversations_limit + 1,
    )
    .await?;
    let more = rows.len() as i64 > conversations_limit;
    rows.truncate(conversations_limit as usize);
    let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
    let message_rows = messages::latest_of(&mut *conn, &ids, messages_limit + 1).await?;
    let files = attachments::of_rows(&mut *conn, &message_rows).await?;
    drop(conn);
    Ok(conversations_page(
        links(&state),
        &channel,
        &rows,
        more,
        message_rows,
        &files,
        messages_limit,
    ))
}

/// The getConversations answer: the page's conversations (`more` when later pages exist), each
/// with up to `messages_limit` of its newest messages out of `message_rows` (those of the whole
/// page, one more per conversation when older ones exist) and their attachments out of `files`.
pub fn conversations_page(
    links: Links<'_>,
    channel: &Channel,
    rows: &[ConversationRow],
    more: bool,
    message_rows: Vec<messages::MessageRow>,
    files: &[attachments::Attachment],
    messages_limit: i64,
) -> Json<Success<Vec<wire::Conversation>>> {
    let mut by_conversation: HashMap<Uuid, Vec<messages::MessageRow>> = HashMap::new();
    for row in message_rows {
        by_conversation.entry(row.conversation_id).or_default().push(row);
    }
    let files = wire::Files::of(files);
    let data: Vec<wire::Conversation> = rows
        .iter()
        .map(|c| {
            let own = by_conversation.remove(&c.id).unwrap_or_default();
            conversation_object(links, channel, c, own, &files, messages_limit)
        })
        .collect();
    let additional = match rows.last() {
        Some(last) if more => json!({"after": cursor::encode(
            Kind::Conversations,
            channel.id,
            Cursor { at: last.last_message_at, id: last.id },
        )}),
        _ => json!({}),
    };
    Success::with_additional(data, additional)
}

/// `getConversationById`: the conversation with the page of messages before `after`.
pub async fn conversation(
    State(state): State<AppState>,
    Path((provider_channel_id, conversation)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Success<wire::Conversation>>, ApiError> {
    let conversation_id = parse_id(&conversation, "conversation")?;
    let params = Params::parse(query);
    let limit = params.limit("messages_limit")?;
    let after = params.cursor(Kind::Messages, conversation_id)?;
    let (channel, found) = conversations::with_page(
        &state.db,
        &provider_channel_id,
        conversation_id,
        after.at,
        after.id,
        limit + 1,
    )
    .await?
    .unzip();
    let channel = active(channel, &provider_channel_id)?;
    let page = found
        .flatten()
        .ok_or_else(|| ApiError::NotFound(format!("Unknown conversation {conversation}")))?;
    Ok(conversation_page(
        links(&state),
        &channel,
        &page.conversation,
        page.messages,
        &page.files,
        limit,
    ))
}

/// The getConversationById answer: the conversation with up to `limit` of `newest_first` (one
/// more than `limit` when older messages exist) and their attachments out of `files`.
pub fn conversation_page(
    links: Links<'_>,
    channel: &Channel,
    conversation: &ConversationRow,
    newest_first: Vec<messages::MessageRow>,
    files: &[attachments::Attachment],
    limit: i64,
) -> Json<Success<wire::Conversation>> {
    let object = conversation_object(
        links,
        channel,
        conversation,
        newest_first,
        &wire::Files::of(files),
        limit,
    );
    let additional = if object.next_messages_cursor.is_empty() {
        json!({})
    } else {
        json!({"after": object.next_messages_cursor})
    };
    Success::with_additional(object, additional)
}

/// `getMessageById` (with the conversation in the path).
pub async fn message_in_conversation(
    State(state): State<AppState>,
    Path((channel, conversation, message)): Path<(String, String, String)>,
) -> Result<Json<wire::Message>, ApiError> {
    let conversation_id = parse_id(&conversation, "conversation")?;
    message_of(&state, &channel, Some(conversation_id), &message).await
}

/// `getMessageById` (the contract's path without the conversation).
pub async fn message(
    State(state): State<AppState>,
    Path((channel, message)): Path<(String, String)>,
) -> Result<Json<wire::Message>, ApiError> {
    message_of(&state, &channel, None, &message).await
}

/// The bare message object with freshly signed attachment links.
async fn message_of(
    state: &AppState,
    channel: &str,
    conversation_id: Option<Uuid>,
    message: &str,
) -> Result<Json<wire::Message>, ApiError> {
    let channel = active_channel(&state.db, channel).await?;
    let id = parse_id(message, "message")?;
    let row = messages::find_row(&state.db, channel.id, id)
        .await?
        .filter(|m| conversation_id.is_none_or(|c| c == m.conversation_id))
        .ok_or_else(|| ApiError::NotFound(format!("Unknown message {message}")))?;
    let files = attachments::of_rows(&state.db, std::slice::from_ref(&row)).await?;
    let own: Vec<&attachments::Attachment> = files.iter().collect();
    Ok(Json(wire::message(row, &own, links(state))))
}

/// `getSenderById`: the business number or a customer of this channel.
pub async fn sender(
    State(state): State<AppState>,
    Path((channel, sender)): Path<(String, String)>,
) -> Result<Json<Success<Value>>, ApiError> {
    let channel = active_channel(&state.db, &channel).await?;
    let unknown = || ApiError::NotFound(format!("Unknown sender {sender}"));
    let name = if sender == channel.phone_number_id {
        wire::business_name(&channel)
    } else {
        let contact_id = Uuid::try_parse(&sender).map_err(|_| unknown())?;
        let mut conn = state.db.acquire().await?;
        if !conversations::exists(&mut *conn, channel.id, contact_id).await? {
            return Err(unknown());
        }
        let contact = contacts::find(&mut conn, contact_id).await?.ok_or_else(unknown)?;
        wire::customer_name(
            contact.profile_name.as_deref(),
            contact.wa_id.as_deref(),
            contact.bsuid.as_deref(),
        )
    };
    Ok(Success::new(json!({
        "id": sender,
        "name": name,
        "avatar_url": links(&state).avatar(&sender),
    })))
}
