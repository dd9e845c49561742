//! Video calling: the user provider links Pipedrive addresses us by (`:linkId`) and the meetings
//! created through each of them. A meeting is only ever read or changed together with its link,
//! so one link's URL cannot reach another link's meetings.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A meeting about to be stored.
#[derive(Debug, Clone)]
pub struct NewMeeting<'a> {
    /// Our opaque id, returned to Pipedrive as `meeting_id`.
    pub id: &'a str,
    /// The link it was created through.
    pub link_id: Uuid,
    /// The activity's subject.
    pub topic: &'a str,
    /// Scheduled start.
    pub start_time: DateTime<Utc>,
    /// Length in minutes.
    pub duration_minutes: i32,
    /// The Jitsi room name.
    pub room: &'a str,
}

/// True when the link exists and has not been removed.
pub async fn link_is_active(db: impl PgExecutor<'_>, link_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM video_links WHERE id = $1 AND removed_at IS NULL) AS "active!""#,
        link_id,
    )
    .fetch_one(db)
    .await
}

/// Stores a new meeting.
pub async fn insert(db: impl PgExecutor<'_>, meeting: &NewMeeting<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO meetings (id, link_id, topic, start_time, duration_minutes, room)
           VALUES ($1, $2, $3, $4, $5, $6)"#,
        meeting.id,
        meeting.link_id,
        meeting.topic,
        meeting.start_time,
        meeting.duration_minutes,
        meeting.room,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Changes the given fields of a live meeting of `link_id` (absent ones are kept); false when the
/// link has no such live meeting.
pub async fn update(
    db: impl PgExecutor<'_>,
    link_id: Uuid,
    meeting_id: &str,
    topic: Option<&str>,
    start_time: Option<DateTime<Utc>>,
    duration_minutes: Option<i32>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE meetings
           SET topic = COALESCE($3, topic),
               start_time = COALESCE($4, start_time),
               duration_minutes = COALESCE($5, duration_minutes),
               updated_at = now()
           WHERE id = $1 AND link_id = $2 AND deleted_at IS NULL"#,
        meeting_id,
        link_id,
        topic,
        start_time,
        duration_minutes,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Marks a meeting of `link_id` deleted (the row stays, so its room is never handed out again).
/// True when the link has (or had) that meeting: deleting twice is harmless.
pub async fn delete(db: impl PgExecutor<'_>, link_id: Uuid, meeting_id: &str) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        r#"UPDATE meetings SET deleted_at = COALESCE(deleted_at, now())
           WHERE id = $1 AND link_id = $2"#,
        meeting_id,
        link_id,
    )
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}
