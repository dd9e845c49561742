//! The provider endpoints of Pipedrive's Messaging app extension (the messaging manifest):
//! Pipedrive calls these with the app's Basic credentials to read our conversation history,
//! send messages and remove channels. Shapes and error bodies follow the provider contract.

pub mod message_form;
mod post_message;
mod reading;

pub use reading::{conversation_page, conversations_page};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use serde::Serialize;
use serde_json::{Value, json};

use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::channels::{self, Channel, ChannelMode};

/// The five reading endpoints of the manifest (getMessageById also without the conversation
/// segment, as the contract's paths and its manifest example disagree).
pub fn reads() -> Router<AppState> {
    Router::new()
        .route(
            "/api/channels/{channel}/conversations",
            get(reading::conversations),
        )
        .route(
            "/api/channels/{channel}/conversations/{conversation}",
            get(reading::conversation),
        )
        .route(
            "/api/channels/{channel}/conversations/{conversation}/messages/{message}",
            get(reading::message_in_conversation),
        )
        .route(
            "/api/channels/{channel}/messages/{message}",
            get(reading::message),
        )
        .route("/api/channels/{channel}/senders/{sender}", get(reading::sender))
        .route("/api/channels/{channel}/templates", get(templates))
}

/// The two writing endpoints of the manifest: postMessage and deleteChannelById.
pub fn writes() -> Router<AppState> {
    Router::new()
        .route("/api/channels/{channel}", delete(delete_channel))
        .merge(post_message::router())
}

/// The contract's success envelope.
#[derive(Debug, Serialize)]
pub struct Success<T> {
    success: bool,
    data: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_data: Option<Value>,
}

impl<T> Success<T> {
    /// `{"success": true, "data": data}`.
    pub fn new(data: T) -> Json<Self> {
        Json(Self {
            success: true,
            data,
            additional_data: None,
        })
    }

    /// With an `additional_data` object.
    pub fn with_additional(data: T, additional: Value) -> Json<Self> {
        Json(Self {
            success: true,
            data,
            additional_data: Some(additional),
        })
    }
}

/// The channel of a `:providerChannelId`, read through `db`; unknown and disabled channels
/// are 404.
pub async fn active_channel(
    db: impl sqlx::PgExecutor<'_>,
    provider_channel_id: &str,
) -> Result<Channel, ApiError> {
    active(
        channels::find_by_phone_number_id(db, provider_channel_id).await?,
        provider_channel_id,
    )
}

/// The channel found for a `:providerChannelId`, if it may be served: a 404 when there is none
/// or it is disabled.
pub fn active(channel: Option<Channel>, provider_channel_id: &str) -> Result<Channel, ApiError> {
    match channel {
        Some(channel) if channel.mode != ChannelMode::Disabled => Ok(channel),
        _ => Err(ApiError::NotFound(format!(
            "Unknown channel {provider_channel_id}"
        ))),
    }
}

/// `getTemplates`: the business account's approved templates.
async fn templates(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Success<Value>>, ApiError> {
    active_channel(&state.db, &channel).await?;
    let templates = crate::whatsapp::templates::approved(
        &state.db,
        &state.graph,
        &state.config.whatsapp.business_account_id,
    )
    .await?;
    let list: Vec<Value> = templates
        .iter()
        .map(|t| json!({"id": t.id, "name": t.name, "content": t.body_text, "language": t.language}))
        .collect();
    Ok(Success::new(json!({"templates": list})))
}

/// `deleteChannelById`: Pipedrive removed the channel; we stop delivering to it (its history
/// stays).
async fn delete_channel(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !channels::disable(&state.db, &channel).await? {
        return Err(ApiError::NotFound(format!("Unknown channel {channel}")));
    }
    tracing::info!(
        phone_number_id = channel,
        "channel removed in Pipedrive; disabled"
    );
    Ok(Json(json!({"success": true})))
}
