//! The CRM timeline: the conversation-days to write (their changes and links), the notes written
//! for them, and the stored history a backfill replays.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::messages::{Direction, MessageRow, MessageStatus};

/// Whom a conversation's notes are about.
#[derive(Debug, Clone)]
pub struct Context {
    /// The conversation.
    pub conversation_id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// The customer.
    pub contact_id: Uuid,
    /// Customer's phone digits.
    pub wa_id: Option<String>,
    /// Customer's business-scoped id.
    pub bsuid: Option<String>,
    /// Customer's WhatsApp profile name.
    pub profile_name: Option<String>,
}

/// The conversation with its customer.
pub async fn context(db: impl PgExecutor<'_>, conversation_id: Uuid) -> Result<Option<Context>, sqlx::Error> {
    sqlx::query_as!(
        Context,
        r#"SELECT c.id AS conversation_id, c.channel_id, c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c JOIN contacts ct ON ct.id = c.contact_id
           WHERE c.id = $1"#,
        conversation_id,
    )
    .fetch_optional(db)
    .await
}

/// Records a change of a conversation-day (creating the day) and returns the conversation's
/// contact; `None` when the conversation's channel belongs to no company yet.
pub async fn touch_day(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    day: NaiveDate,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH owner AS (
               SELECT c.id, c.contact_id, ch.company_id FROM conversations c
               JOIN channels ch ON ch.id = c.channel_id
               WHERE c.id = $1 AND ch.company_id IS NOT NULL),
           touched AS (
               INSERT INTO timeline_days (conversation_id, day, company_id, version)
               SELECT id, $2, company_id, 1 FROM owner
               ON CONFLICT (conversation_id, day)
               DO UPDATE SET version = timeline_days.version + 1, updated_at = now()
               RETURNING conversation_id)
           SELECT owner.contact_id AS "contact_id!" FROM owner JOIN touched ON touched.conversation_id = owner.id"#,
        conversation_id,
        day,
    )
    .fetch_optional(conn)
    .await
}

/// Where a conversation-day stands.
#[derive(Debug, Clone, Default)]
pub struct Day {
    /// Changes reported so far.
    pub version: i64,
    /// The change the last write covered.
    pub written_version: i64,
    /// The person its notes are on, once decided.
    pub person_id: Option<i64>,
    /// The open deal its notes are linked to.
    pub deal_id: Option<i64>,
    /// The open lead its notes are linked to.
    pub lead_id: Option<String>,
}

/// A conversation-day, if any change was recorded for it.
pub async fn day(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
) -> Result<Option<Day>, sqlx::Error> {
    sqlx::query_as!(
        Day,
        r#"SELECT version, written_version, person_id, deal_id, lead_id FROM timeline_days
           WHERE conversation_id = $1 AND day = $2"#,
        conversation_id,
        day,
    )
    .fetch_optional(db)
    .await
}

/// Creates the day row for a write that no change reported (a backfill), keeping an existing one.
pub async fn ensure_day(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
    company_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO timeline_days (conversation_id, day, company_id) VALUES ($1, $2, $3)
           ON CONFLICT (conversation_id, day) DO NOTHING"#,
        conversation_id,
        day,
        company_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Fixes the person, deal and lead of a day's notes.
pub async fn set_links(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
    person_id: i64,
    deal_id: Option<i64>,
    lead_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE timeline_days SET person_id = $3, deal_id = $4, lead_id = $5, updated_at = now()
           WHERE conversation_id = $1 AND day = $2"#,
        conversation_id,
        day,
        person_id,
        deal_id,
        lead_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Records that a write covered the day up to change `version`, or (with `reason`) why nothing
/// could be written.
pub async fn settle_day(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
    version: i64,
    no_person: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE timeline_days SET written_version = GREATEST(written_version, $3),
                  state = CASE WHEN $4::text IS NULL THEN 'written' ELSE 'no_person' END,
                  reason = $4, updated_at = now()
           WHERE conversation_id = $1 AND day = $2"#,
        conversation_id,
        day,
        version,
        no_person,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A note written for part of a conversation-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// 0 for the day's first note, then 1, 2 … when it rolled over.
    pub part: i32,
    /// Pipedrive's note id.
    pub note_id: i64,
    /// Hash of what the note last received.
    pub content_hash: String,
}

/// The notes of a conversation-day, by part.
pub async fn notes(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
) -> Result<Vec<Note>, sqlx::Error> {
    sqlx::query_as!(
        Note,
        r#"SELECT part, note_id, content_hash FROM timeline_notes
           WHERE conversation_id = $1 AND day = $2 ORDER BY part"#,
        conversation_id,
        day,
    )
    .fetch_all(db)
    .await
}

/// Records the note of a part and what it received.
pub async fn save_note(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
    note: &Note,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO timeline_notes (conversation_id, day, part, note_id, content_hash)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (conversation_id, day, part)
           DO UPDATE SET note_id = $4, content_hash = $5, updated_at = now()"#,
        conversation_id,
        day,
        note.part,
        note.note_id,
        note.content_hash,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets the note of a part (deleted in Pipedrive).
pub async fn forget_note(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    day: NaiveDate,
    part: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM timeline_notes WHERE conversation_id = $1 AND day = $2 AND part = $3",
        conversation_id,
        day,
        part,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The messages of a conversation sent in `[from, to)`, oldest first.
pub async fn messages_between(
    db: impl PgExecutor<'_>,
    conversation_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT id, conversation_id, channel_id, direction AS "direction: Direction", sender_id, kind, body,
                  status AS "status: MessageStatus", error_code, error_title, error_detail, sent_at,
                  has_files
           FROM messages
           WHERE conversation_id = $1 AND sent_at >= $2 AND sent_at < $3
           ORDER BY sent_at, id"#,
        conversation_id,
        from,
        to,
    )
    .fetch_all(db)
    .await
}

/// A conversation-day with stored messages, to replay into the timeline.
#[derive(Debug, Clone)]
pub struct StoredDay {
    /// The conversation.
    pub conversation_id: Uuid,
    /// Its customer (timeline writes are ordered per customer).
    pub contact_id: Uuid,
    /// The UTC day.
    pub day: NaiveDate,
}

/// Every conversation-day with messages on a channel that belongs to a company (`company_id`
/// only, when given) and is not disabled, from `since` on, oldest first.
pub async fn stored_days(
    db: impl PgExecutor<'_>,
    company_id: Option<i64>,
    since: Option<NaiveDate>,
) -> Result<Vec<StoredDay>, sqlx::Error> {
    sqlx::query_as!(
        StoredDay,
        r#"SELECT DISTINCT m.conversation_id, c.contact_id, (m.sent_at AT TIME ZONE 'UTC')::date AS "day!"
           FROM messages m
           JOIN conversations c ON c.id = m.conversation_id
           JOIN channels ch ON ch.id = m.channel_id
           WHERE ch.company_id IS NOT NULL AND ch.installation_id IS NOT NULL AND ch.mode <> 'disabled'
             AND ($1::bigint IS NULL OR ch.company_id = $1)
             AND ($2::date IS NULL OR m.sent_at >= $2::date::timestamp AT TIME ZONE 'UTC')
           ORDER BY 3, 1"#,
        company_id,
        since,
    )
    .fetch_all(db)
    .await
}
