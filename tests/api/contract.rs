//! Pipedrive's provider contract, written from its OpenAPI file (not from our code): responses
//! must deserialize into these types, which refuse unknown fields and invalid enum values.

use serde::Deserialize;

/// `GET …/conversations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsResponse {
    pub success: bool,
    pub data: Vec<Conversation>,
    pub additional_data: Option<AdditionalData>,
}

/// `GET …/conversations/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationResponse {
    pub success: bool,
    pub data: Conversation,
    pub additional_data: Option<AdditionalData>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdditionalData {
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Open,
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    pub id: String,
    pub link: String,
    pub status: ConversationStatus,
    pub seen: bool,
    pub next_messages_cursor: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub participants: Option<Vec<Participant>>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

/// `getMessageById` answers with this object bare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub id: String,
    pub status: MessageStatus,
    pub created_at: String,
    pub message: String,
    pub sender_id: String,
    pub reply_by: Option<String>,
    pub attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub id: String,
    #[serde(rename = "type")]
    pub mime_type: String,
    pub name: Option<String>,
    pub size: Option<f64>,
    pub url: String,
    pub link_expires: Option<bool>,
    pub preview_url: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    EndUser,
    SourceUser,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub avatar_url: Option<String>,
    pub fetch_avatar: Option<bool>,
    pub avatar_expires: Option<bool>,
}

/// `getSenderById`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderResponse {
    pub success: bool,
    pub data: Sender,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    pub id: String,
    pub name: String,
    pub avatar_url: String,
}

/// `getTemplates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatesResponse {
    pub success: bool,
    pub data: TemplateList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub content: String,
    pub language: String,
}

/// `postMessage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessageResponse {
    pub success: bool,
    pub data: PostedMessage,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostedMessage {
    pub id: String,
}

/// The documented `YYYY-MM-DD HH:MM` UTC format.
pub fn assert_contract_time(value: &str) {
    assert!(
        chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M").is_ok(),
        "{value} is not YYYY-MM-DD HH:MM"
    );
}

/// Every participant list has exactly one source_user and at least one end_user, each with an
/// avatar we serve (so Pipedrive never needs to fetch or refresh one).
pub fn assert_participants(conversation: &Conversation) {
    let participants = conversation.participants.as_ref().expect("participants");
    assert!(
        participants
            .iter()
            .all(|p| p.fetch_avatar != Some(true) && p.avatar_expires != Some(true))
    );
    assert_eq!(
        participants.iter().filter(|p| p.role == Role::SourceUser).count(),
        1
    );
    assert!(participants.iter().any(|p| p.role == Role::EndUser));
    assert!(
        participants
            .iter()
            .all(|p| p.avatar_url.as_deref().is_some_and(|u| !u.is_empty()))
    );
}
