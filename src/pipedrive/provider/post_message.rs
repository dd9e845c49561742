//! `postMessage`: a salesperson's message from Pipedrive's inbox (multipart/form-data with
//! `message`, `senderId`, `conversationId`, `recipientIds`, `files`), sent the way every
//! message a salesperson writes is (see [`reply`]): a refusal WhatsApp gives right away comes
//! back as a 400, anything slower or transient is left to the queue and reported later through
//! status updates.

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::routing::post;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;
use uuid::Uuid;

use super::{Success, active_channel, message_form};
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::conversations;
use crate::whatsapp::reply::{self, BODY_LIMIT};

/// The postMessage route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/channels/{channel}/messages", post(post_message))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Refuses a body announced larger than the limit before reading any of it.
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
}

fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("{field}: missing")))
}

async fn post_message(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    request: Request,
) -> Result<Json<Success<Value>>, ApiError> {
    let channel = active_channel(&state.db, &channel).await?;
    let form = message_form::read(request).await?;

    let conversation_field = required(&form.conversation_id, "conversationId")?;
    let sender_id = required(&form.sender_id, "senderId")?;
    let conversation = match Uuid::try_parse(conversation_field) {
        Ok(id) => conversations::find_on_channel(&state.db, channel.id, id).await?,
        Err(_) => None,
    }
    .ok_or_else(|| {
        ApiError::BadRequest(format!(
            "conversationId: unknown conversation {conversation_field}"
        ))
    })?;
    if sender_id != channel.phone_number_id {
        tracing::warn!(
            sender_id,
            "postMessage: senderId is not this channel's business participant"
        );
    }
    let customer = conversation.contact_id.to_string();
    if !form.recipient_ids.is_empty() && !form.recipient_ids.contains(&customer) {
        tracing::warn!(
            "postMessage: recipientIds do not name this conversation's customer; sending to the customer"
        );
    }
    let text = form.message.unwrap_or_default();
    let candidates = reply::recognisable_templates(&state, !form.files.is_empty()).await?;
    let message_id = reply::send(&state, &channel, &conversation, &text, form.files, &candidates).await?;
    Ok(accepted(message_id))
}

fn accepted(message_id: Uuid) -> Json<Success<Value>> {
    Success::new(json!({"id": message_id.to_string()}))
}
