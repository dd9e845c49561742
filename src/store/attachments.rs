//! Media of messages: metadata, download state, and the bytes themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::messages::MessageRow;

/// Download state of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum AttachmentStatus {
    /// Not downloaded yet.
    Pending,
    /// Bytes are in the database.
    Stored,
    /// Could not be fetched (yet); `error` says why.
    Failed,
}

/// An attachment without its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    /// Our id.
    pub id: Uuid,
    /// Its message.
    pub message_id: Uuid,
    /// Order within the message.
    pub position: i32,
    /// Meta's media id.
    pub media_id: Option<String>,
    /// MIME type.
    pub mime_type: String,
    /// File name.
    pub filename: Option<String>,
    /// Size in bytes, once known.
    pub size_bytes: Option<i64>,
    /// Hex SHA-256 of the bytes, once known.
    pub sha256: Option<String>,
    /// Download state.
    pub status: AttachmentStatus,
    /// Why the download failed.
    pub error: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Records a media object of `message_id` to be downloaded; returns its id.
pub async fn insert_pending(
    conn: &mut PgConnection,
    message_id: Uuid,
    position: i32,
    media_id: &str,
    mime_type: &str,
    filename: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"WITH attachment AS (
               INSERT INTO attachments (id, message_id, position, media_id, mime_type, filename)
               VALUES ($1, $2, $3, $4, $5, $6))
           UPDATE messages SET has_files = true WHERE id = $2 AND NOT has_files"#,
        id,
        message_id,
        position,
        media_id,
        mime_type,
        filename,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// One attachment's metadata.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Attachment>, sqlx::Error> {
    sqlx::query_as!(
        Attachment,
        r#"SELECT id, message_id, position, media_id, mime_type, filename, size_bytes, sha256,
                  status AS "status: AttachmentStatus", error, created_at
           FROM attachments WHERE id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Stores downloaded bytes; returns the previous status.
pub async fn store_content(
    db: impl PgExecutor<'_>,
    id: Uuid,
    mime_type: &str,
    sha256: &str,
    content: &[u8],
) -> Result<Option<AttachmentStatus>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE attachments a SET status = 'stored', content = $4, size_bytes = $5, sha256 = $3,
                  mime_type = $2, error = NULL, updated_at = now()
           FROM (SELECT id, status FROM attachments WHERE id = $1 FOR UPDATE) old
           WHERE a.id = old.id
           RETURNING old.status AS "status: AttachmentStatus""#,
        id,
        mime_type,
        sha256,
        content,
        content.len() as i64,
    )
    .fetch_optional(db)
    .await
}

/// Marks a download as failed (for now); a later success still stores the bytes.
pub async fn mark_failed(db: impl PgExecutor<'_>, id: Uuid, error: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE attachments SET status = 'failed', error = $2, updated_at = now()
           WHERE id = $1 AND status = 'pending'"#,
        id,
        error,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Bytes of a stored attachment.
pub struct Content {
    /// MIME type.
    pub mime_type: String,
    /// File name.
    pub filename: Option<String>,
    /// The bytes.
    pub content: Vec<u8>,
}

/// The bytes of a stored attachment, if stored.
pub async fn content(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Content>, sqlx::Error> {
    sqlx::query_as!(
        Content,
        r#"SELECT mime_type, filename, content AS "content!" FROM attachments
           WHERE id = $1 AND status = 'stored' AND content IS NOT NULL"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// The attachments of several messages, in message and position order.
pub async fn of_messages(
    db: impl PgExecutor<'_>,
    message_ids: &[Uuid],
) -> Result<Vec<Attachment>, sqlx::Error> {
    sqlx::query_as!(
        Attachment,
        r#"SELECT id, message_id, position, media_id, mime_type, filename, size_bytes, sha256,
                  status AS "status: AttachmentStatus", error, created_at
           FROM attachments WHERE message_id = ANY($1) ORDER BY message_id, position"#,
        message_ids
    )
    .fetch_all(db)
    .await
}

/// The attachments of those of `rows` that have any, in message and position order; nothing is
/// read when none has (most messages have no files).
pub async fn of_rows(db: impl PgExecutor<'_>, rows: &[MessageRow]) -> Result<Vec<Attachment>, sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().filter(|m| m.has_files).map(|m| m.id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    of_messages(db, &ids).await
}

/// Stores a file written in Pipedrive; returns its id.
pub async fn insert_stored(
    conn: &mut PgConnection,
    message_id: Uuid,
    position: i32,
    mime_type: &str,
    filename: Option<&str>,
    content: &[u8],
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(content));
    sqlx::query!(
        r#"WITH attachment AS (
               INSERT INTO attachments (id, message_id, position, mime_type, filename, size_bytes,
                                        sha256, content, status)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'stored'))
           UPDATE messages SET has_files = true WHERE id = $2 AND NOT has_files"#,
        id,
        message_id,
        position,
        mime_type,
        filename,
        content.len() as i64,
        sha256,
        content,
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// Remembers the id WhatsApp gave an uploaded file, so a retry does not upload it again.
pub async fn set_media_id(db: impl PgExecutor<'_>, id: Uuid, media_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE attachments SET media_id = $2, updated_at = now() WHERE id = $1",
        id,
        media_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records WhatsApp's id of the message that carried this file, unless known already.
pub async fn set_wamid_if_missing(db: impl PgExecutor<'_>, id: Uuid, wamid: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE attachments SET wamid = $2, updated_at = now() WHERE id = $1 AND wamid IS NULL",
        id,
        wamid
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A part of an outbound message: a file and what WhatsApp knows of it.
#[derive(Debug, Clone)]
pub struct OutboundFile {
    /// Our id.
    pub id: Uuid,
    /// MIME type.
    pub mime_type: String,
    /// File name.
    pub filename: Option<String>,
    /// Uploaded media id, once uploaded.
    pub media_id: Option<String>,
    /// Id of the WhatsApp message that carried it, once sent.
    pub wamid: Option<String>,
}

/// The files of an outbound message, in order.
pub async fn outbound_files(
    db: impl PgExecutor<'_>,
    message_id: Uuid,
) -> Result<Vec<OutboundFile>, sqlx::Error> {
    sqlx::query_as!(
        OutboundFile,
        r#"SELECT id, mime_type, filename, media_id, wamid FROM attachments
           WHERE message_id = $1 ORDER BY position"#,
        message_id
    )
    .fetch_all(db)
    .await
}
