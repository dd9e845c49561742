//! Our WhatsApp numbers as Pipedrive channels: registering them at install (idempotently, with
//! the fall-back to the CRM timeline once the Channels API is retired) and removing one.

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::{PipedriveClient, PipedriveError};
use crate::http::assets::CHANNEL_ICON_PATH;
use crate::state::AppState;
use crate::store::channels::{self, Channel, ChannelMode};
use crate::store::installations::{self, InstallationStatus};

/// The installation a channel is registered for.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    /// Installation id.
    pub installation_id: Uuid,
    /// Pipedrive company id.
    pub company_id: i64,
}

/// How registering one number ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Pipedrive created the channel; its id when it sent one.
    Created {
        /// Pipedrive's channel id.
        pipedrive_channel_id: Option<String>,
    },
    /// The channel already exists in this company's Pipedrive; nothing was duplicated.
    AlreadyRegistered,
    /// The Channels API is retired: messages go to the CRM timeline.
    Timeline,
    /// Pipedrive answered 403: only admins may add channels.
    AdminOnly {
        /// Pipedrive's explanation.
        message: String,
    },
    /// The number is already a channel of another Pipedrive company.
    OtherCompany,
    /// Registration failed; re-running the install retries it.
    Failed(String),
}

/// A configured number and what the install did with it.
#[derive(Debug, Clone)]
pub struct NumberReport {
    /// WhatsApp phone number id (our `provider_channel_id`).
    pub phone_number_id: String,
    /// The number as people dial it.
    pub display_phone_number: Option<String>,
    /// The verified business name.
    pub verified_name: Option<String>,
    /// Pipedrive's channel id, when known.
    pub pipedrive_channel_id: Option<String>,
    /// The outcome.
    pub registration: Registration,
}

/// Registers every configured number as a channel of `owner`'s company.
pub async fn register_all(state: &AppState, owner: Owner) -> Result<Vec<NumberReport>, sqlx::Error> {
    // Start-up creates these rows; creating missing ones here keeps the install self-sufficient.
    channels::ensure_configured(&state.db, &state.config.whatsapp.phone_number_ids).await?;
    let mut reports = Vec::new();
    for phone_number_id in &state.config.whatsapp.phone_number_ids {
        reports.push(register(state, owner, phone_number_id).await?);
    }
    Ok(reports)
}

#[tracing::instrument(skip(state, owner), fields(installation_id = %owner.installation_id, company_id = owner.company_id))]
async fn register(
    state: &AppState,
    owner: Owner,
    phone_number_id: &str,
) -> Result<NumberReport, sqlx::Error> {
    match state.graph.phone_number(phone_number_id).await {
        Ok(number) => {
            channels::set_number_details(
                &state.db,
                phone_number_id,
                number.display_phone_number.as_deref(),
                number.verified_name.as_deref(),
            )
            .await?;
        }
        Err(error) => tracing::warn!(%error, "cannot read the number from the Graph API"),
    }
    let channel = channels::find_by_phone_number_id(&state.db, phone_number_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let registration = match existing(state, owner, &channel).await? {
        Some(registration) => registration,
        None => match &channel.display_phone_number {
            Some(display) => create(state, owner, &channel.phone_number_id, display).await?,
            None => Registration::Failed(
                "the Graph API did not give this number's display phone number; check \
                 WHATSAPP_ACCESS_TOKEN and run the install again"
                    .into(),
            ),
        },
    };
    let channel = channels::find_by_phone_number_id(&state.db, phone_number_id)
        .await?
        .unwrap_or(channel);
    Ok(NumberReport {
        phone_number_id: channel.phone_number_id,
        display_phone_number: channel.display_phone_number,
        verified_name: channel.verified_name,
        pipedrive_channel_id: channel.pipedrive_channel_id,
        registration,
    })
}

/// The outcome for a channel that is already registered for a company, without calling
/// Pipedrive. Another user of the same company re-installing keeps the channel and its owner,
/// unless the owner can no longer call Pipedrive; then this installation takes over.
async fn existing(
    state: &AppState,
    owner: Owner,
    channel: &Channel,
) -> Result<Option<Registration>, sqlx::Error> {
    let (Some(current_owner), Some(company_id)) = (channel.installation_id, channel.company_id) else {
        return Ok(None);
    };
    if channel.mode == ChannelMode::Disabled {
        return Ok(None);
    }
    if company_id != owner.company_id {
        return Ok(Some(Registration::OtherCompany));
    }
    let owner_active = installations::credentials(&state.db, current_owner)
        .await?
        .is_some_and(|c| c.status == InstallationStatus::Active);
    if current_owner != owner.installation_id && !owner_active {
        channels::record_registration(
            &state.db,
            &channel.phone_number_id,
            owner.installation_id,
            owner.company_id,
            None,
            channel.mode,
        )
        .await?;
    }
    Ok(Some(match channel.mode {
        ChannelMode::Timeline => Registration::Timeline,
        _ => Registration::AlreadyRegistered,
    }))
}

async fn create(
    state: &AppState,
    owner: Owner,
    phone_number_id: &str,
    display_phone_number: &str,
) -> Result<Registration, sqlx::Error> {
    let body = json!({
        "name": format!("WhatsApp {display_phone_number}"),
        "provider_channel_id": phone_number_id,
        "provider_type": "whatsapp",
        "template_support": true,
        "avatar_url": state.config.public_url.join(CHANNEL_ICON_PATH),
    });
    let answer = state
        .pipedrive
        .request(
            owner.installation_id,
            Method::POST,
            "/api/v1/channels",
            Some(&body),
        )
        .await;
    let (pipedrive_channel_id, mode, registration) = match answer {
        Ok(response) => {
            let id = response.body.pointer("/data/id").and_then(|id| match id {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let registration = Registration::Created {
                pipedrive_channel_id: id.clone(),
            };
            (id, ChannelMode::Inbox, registration)
        }
        Err(PipedriveError::Gone { status }) => {
            tracing::warn!(
                status,
                "Channels API retired; the channel delivers to the CRM timeline"
            );
            (None, ChannelMode::Timeline, Registration::Timeline)
        }
        Err(PipedriveError::Rejected {
            status: 403, message, ..
        }) => {
            return Ok(Registration::AdminOnly { message });
        }
        Err(PipedriveError::Rejected { message, .. }) if is_duplicate(&message) => {
            (None, ChannelMode::Inbox, Registration::AlreadyRegistered)
        }
        Err(error) => {
            tracing::warn!(%error, "channel registration failed");
            return Ok(Registration::Failed(error.to_string()));
        }
    };
    channels::record_registration(
        &state.db,
        phone_number_id,
        owner.installation_id,
        owner.company_id,
        pipedrive_channel_id.as_deref(),
        mode,
    )
    .await?;
    // Messages that arrived before the channel existed in Pipedrive go out now.
    crate::queue::unpark(&state.db, &super::delivery::unregistered_tag(phone_number_id)).await?;
    Ok(registration)
}

/// Pipedrive refuses a second channel with the same provider id; that channel is ours.
fn is_duplicate(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("already exist") || message.contains("duplicate")
}

/// How removing a channel ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Pipedrive deleted the channel (and its conversations there).
    Deleted,
    /// The Channels API is retired; nothing to delete in Pipedrive.
    ApiRetired,
    /// No installation can call Pipedrive for it; only disabled here.
    LocalOnly,
}

/// Why a channel could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// No channel has this phone number id.
    #[error("no channel has phone number id {0}")]
    Unknown(String),
    /// Pipedrive refused or failed; the channel stays enabled.
    #[error(transparent)]
    Pipedrive(#[from] PipedriveError),
}

/// Deletes the channel in Pipedrive with its owner's token (the Channels API speaks our
/// provider ids), tolerating a retired API, then disables it here.
pub async fn remove(
    pipedrive: &PipedriveClient,
    db: &sqlx::PgPool,
    phone_number_id: &str,
) -> Result<Removal, RemovalError> {
    let channel = channels::find_by_phone_number_id(db, phone_number_id)
        .await
        .map_err(PipedriveError::from)?
        .ok_or_else(|| RemovalError::Unknown(phone_number_id.to_string()))?;
    let owner = match channel.installation_id {
        Some(id) => installations::credentials(db, id)
            .await
            .map_err(PipedriveError::from)?,
        None => None,
    };
    let removal = match owner {
        Some(owner) if owner.status != InstallationStatus::Uninstalled => {
            let path = format!("/api/v1/channels/{phone_number_id}");
            match pipedrive.request(owner.id, Method::DELETE, &path, None).await {
                Ok(_) => Removal::Deleted,
                Err(PipedriveError::Gone { .. }) => Removal::ApiRetired,
                Err(error) => return Err(error.into()),
            }
        }
        _ => Removal::LocalOnly,
    };
    channels::disable(db, phone_number_id)
        .await
        .map_err(PipedriveError::from)?;
    Ok(removal)
}
