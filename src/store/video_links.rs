//! Video-calling links: one `user_provider_id` registered with Pipedrive per installation.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The installation's live link, created with `new_id` when it has none.
pub async fn ensure_active(
    conn: &mut PgConnection,
    new_id: Uuid,
    installation_id: Uuid,
    company_id: i64,
    user_id: i64,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO video_links (id, installation_id, company_id, user_id)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (installation_id) WHERE removed_at IS NULL DO NOTHING"#,
        new_id,
        installation_id,
        company_id,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"SELECT id FROM video_links WHERE installation_id = $1 AND removed_at IS NULL"#,
        installation_id,
    )
    .fetch_one(&mut *conn)
    .await
}

/// Marks the live links of `installation_ids` removed; returns how many.
pub async fn remove_for_installations(
    db: impl PgExecutor<'_>,
    installation_ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE video_links SET removed_at = now()
           WHERE installation_id = ANY($1) AND removed_at IS NULL"#,
        installation_ids,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}
