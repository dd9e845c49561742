//! Channels: one per configured WhatsApp phone number.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Where a channel's messages go in Pipedrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ChannelMode {
    /// Pipedrive's Messaging inbox (Channels API).
    Inbox,
    /// Notes on the CRM timeline (after the Channels API was retired).
    Timeline,
    /// Removed in Pipedrive or uninstalled: nothing is delivered.
    Disabled,
}

/// A WhatsApp number registered (or to be registered) as a Pipedrive channel.
#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    /// Our id.
    pub id: Uuid,
    /// WhatsApp phone number id; the `provider_channel_id` in Pipedrive.
    pub phone_number_id: String,
    /// The number as people dial it, from the Graph API.
    pub display_phone_number: Option<String>,
    /// The business name WhatsApp verified for the number.
    pub verified_name: Option<String>,
    /// The installation whose token delivers this channel's messages.
    pub installation_id: Option<Uuid>,
    /// Pipedrive company owning the channel.
    pub company_id: Option<i64>,
    /// Pipedrive's own id of the channel (kept for logs and support).
    pub pipedrive_channel_id: Option<String>,
    /// Delivery mode.
    pub mode: ChannelMode,
    /// When the row was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Creates a channel row for each configured number that has none; existing rows are kept as
/// they are.
pub async fn ensure_configured(
    db: impl PgExecutor<'_>,
    phone_number_ids: &[String],
) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> = phone_number_ids.iter().map(|_| Uuid::now_v7()).collect();
    let inserted = sqlx::query!(
        r#"INSERT INTO channels (id, phone_number_id)
           SELECT * FROM UNNEST($1::uuid[], $2::text[])
           ON CONFLICT (phone_number_id) DO NOTHING"#,
        &ids,
        phone_number_ids,
    )
    .execute(db)
    .await?;
    Ok(inserted.rows_affected())
}

/// The channel of a WhatsApp phone number id.
pub async fn find_by_phone_number_id(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
) -> Result<Option<Channel>, sqlx::Error> {
    sqlx::query_as!(
        Channel,
        r#"SELECT id, phone_number_id, display_phone_number, verified_name, installation_id,
                  company_id, pipedrive_channel_id, mode AS "mode: ChannelMode", created_at, updated_at
           FROM channels WHERE phone_number_id = $1"#,
        phone_number_id,
    )
    .fetch_optional(db)
    .await
}

/// Every channel, in creation order.
pub async fn list(db: impl PgExecutor<'_>) -> Result<Vec<Channel>, sqlx::Error> {
    sqlx::query_as!(
        Channel,
        r#"SELECT id, phone_number_id, display_phone_number, verified_name, installation_id,
                  company_id, pipedrive_channel_id, mode AS "mode: ChannelMode", created_at, updated_at
           FROM channels ORDER BY created_at, phone_number_id"#,
    )
    .fetch_all(db)
    .await
}

/// Changes where a channel's messages go.
pub async fn set_mode(db: impl PgExecutor<'_>, id: Uuid, mode: ChannelMode) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE channels SET mode = $2, updated_at = now() WHERE id = $1",
        id,
        mode as ChannelMode
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records the number's details as the Graph API reports them.
pub async fn set_number_details(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    display_phone_number: Option<&str>,
    verified_name: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE channels SET display_phone_number = COALESCE($2, display_phone_number),
                  verified_name = COALESCE($3, verified_name), updated_at = now()
           WHERE phone_number_id = $1"#,
        phone_number_id,
        display_phone_number,
        verified_name,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Attaches a channel to the installation whose token delivers it, in `mode`. A known
/// Pipedrive channel id is kept when `pipedrive_channel_id` is `None`.
pub async fn record_registration(
    db: impl PgExecutor<'_>,
    phone_number_id: &str,
    installation_id: Uuid,
    company_id: i64,
    pipedrive_channel_id: Option<&str>,
    mode: ChannelMode,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE channels SET installation_id = $2, company_id = $3,
                  pipedrive_channel_id = COALESCE($4, pipedrive_channel_id), mode = $5,
                  updated_at = now()
           WHERE phone_number_id = $1"#,
        phone_number_id,
        installation_id,
        company_id,
        pipedrive_channel_id,
        mode as ChannelMode,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stops delivering a channel; false when the number is unknown.
pub async fn disable(db: impl PgExecutor<'_>, phone_number_id: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE channels SET mode = 'disabled', updated_at = now() WHERE phone_number_id = $1"#,
        phone_number_id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Disables every channel delivered by one of `installation_ids`; returns how many.
pub async fn disable_for_installations(
    db: impl PgExecutor<'_>,
    installation_ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE channels SET mode = 'disabled', updated_at = now()
           WHERE installation_id = ANY($1) AND mode <> 'disabled'"#,
        installation_ids,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// A channel by our id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Channel>, sqlx::Error> {
    sqlx::query_as!(
        Channel,
        r#"SELECT id, phone_number_id, display_phone_number, verified_name, installation_id,
                  company_id, pipedrive_channel_id, mode AS "mode: ChannelMode", created_at, updated_at
           FROM channels WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}
