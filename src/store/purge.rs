//! Erasing everything a Pipedrive company left with us (`purge-company`).

use serde::Serialize;
use sqlx::PgConnection;

/// What a purge removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Purged {
    /// Installations deleted (with their tokens).
    pub installations: i64,
    /// Channels detached from the company (the configured numbers stay, disabled).
    pub channels: i64,
    /// Conversations deleted.
    pub conversations: i64,
    /// Messages deleted.
    pub messages: i64,
    /// Attachments deleted (with their bytes).
    pub attachments: i64,
    /// Contacts deleted because no other conversation refers to them.
    pub contacts: i64,
    /// Video-calling links deleted.
    pub video_links: i64,
    /// Meetings deleted.
    pub meetings: i64,
    /// Jobs deleted that were waiting for the company's installations.
    pub jobs: i64,
}

/// Deletes a company's installations, conversation history and video links. Run it in a
/// transaction: the counts are taken before the deletes.
pub async fn company(conn: &mut PgConnection, company_id: i64) -> Result<Purged, sqlx::Error> {
    let counts = sqlx::query!(
        r#"SELECT
             (SELECT count(*) FROM installations WHERE company_id = $1) AS "installations!",
             (SELECT count(*) FROM channels WHERE company_id = $1) AS "channels!",
             (SELECT count(*) FROM conversations c JOIN channels ch ON ch.id = c.channel_id
               WHERE ch.company_id = $1) AS "conversations!",
             (SELECT count(*) FROM messages m JOIN channels ch ON ch.id = m.channel_id
               WHERE ch.company_id = $1) AS "messages!",
             (SELECT count(*) FROM attachments a JOIN messages m ON m.id = a.message_id
               JOIN channels ch ON ch.id = m.channel_id WHERE ch.company_id = $1) AS "attachments!",
             (SELECT count(*) FROM video_links WHERE company_id = $1) AS "video_links!",
             (SELECT count(*) FROM meetings mt JOIN video_links v ON v.id = mt.link_id
               WHERE v.company_id = $1) AS "meetings!""#,
        company_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    let jobs = sqlx::query!(
        r#"DELETE FROM jobs WHERE state IN ('queued', 'parked', 'dead') AND parked_on IN (
               SELECT 'installation:' || id FROM installations WHERE company_id = $1)"#,
        company_id,
    )
    .execute(&mut *conn)
    .await?;
    let contacts = sqlx::query_scalar!(
        r#"SELECT DISTINCT c.contact_id FROM conversations c JOIN channels ch ON ch.id = c.channel_id
           WHERE ch.company_id = $1"#,
        company_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        r#"DELETE FROM conversations WHERE channel_id IN (SELECT id FROM channels WHERE company_id = $1)"#,
        company_id,
    )
    .execute(&mut *conn)
    .await?;
    let orphans = sqlx::query!(
        r#"DELETE FROM contacts ct WHERE ct.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.contact_id = ct.id)"#,
        &contacts,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"UPDATE channels SET installation_id = NULL, company_id = NULL, pipedrive_channel_id = NULL,
                  mode = 'disabled', updated_at = now()
           WHERE company_id = $1"#,
        company_id,
    )
    .execute(&mut *conn)
    .await?;
    super::crm::purge_company(conn, company_id).await?;
    sqlx::query!("DELETE FROM video_links WHERE company_id = $1", company_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM installations WHERE company_id = $1", company_id)
        .execute(&mut *conn)
        .await?;
    Ok(Purged {
        installations: counts.installations,
        channels: counts.channels,
        conversations: counts.conversations,
        messages: counts.messages,
        attachments: counts.attachments,
        contacts: orphans.rows_affected() as i64,
        video_links: counts.video_links,
        meetings: counts.meetings,
        jobs: jobs.rows_affected() as i64,
    })
}
