//! WhatsApp users we have talked to.

use sqlx::PgConnection;
use uuid::Uuid;

/// How a webhook identifies a user: phone (`wa_id`), business-scoped id, or both.
#[derive(Debug, Clone, Default)]
pub struct Identity<'a> {
    /// Phone number digits.
    pub wa_id: Option<&'a str>,
    /// Business-scoped user id.
    pub bsuid: Option<&'a str>,
    /// Profile name, when the webhook carried one.
    pub profile_name: Option<&'a str>,
}

/// A contact as shown to Pipedrive.
#[derive(Debug, Clone)]
pub struct Contact {
    /// Our id (also the participant id in Pipedrive).
    pub id: Uuid,
    /// Phone digits.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub bsuid: Option<String>,
    /// WhatsApp profile name.
    pub profile_name: Option<String>,
}

/// Finds the contact by phone or BSUID, creating it if new, and refreshes its profile name and
/// missing identifiers. Returns its id.
pub async fn upsert(conn: &mut PgConnection, who: &Identity<'_>) -> Result<Uuid, sqlx::Error> {
    for _ in 0..2 {
        let existing = sqlx::query_scalar!(
            r#"SELECT id FROM contacts WHERE wa_id = $1 OR bsuid = $2
               ORDER BY (wa_id = $1) DESC NULLS LAST LIMIT 1"#,
            who.wa_id,
            who.bsuid,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = existing {
            sqlx::query!(
                r#"UPDATE contacts SET
                       profile_name = COALESCE(NULLIF($2, ''), profile_name),
                       wa_id = COALESCE(wa_id, $3),
                       bsuid = COALESCE(bsuid, $4),
                       updated_at = now()
                   WHERE id = $1
                     AND (profile_name IS DISTINCT FROM COALESCE(NULLIF($2, ''), profile_name)
                          OR (wa_id IS NULL AND $3::text IS NOT NULL)
                          OR (bsuid IS NULL AND $4::text IS NOT NULL))"#,
                id,
                who.profile_name,
                who.wa_id,
                who.bsuid,
            )
            .execute(&mut *conn)
            .await?;
            return Ok(id);
        }
        let inserted = sqlx::query_scalar!(
            r#"INSERT INTO contacts (id, wa_id, bsuid, profile_name) VALUES ($1, $2, $3, NULLIF($4, ''))
               ON CONFLICT DO NOTHING RETURNING id"#,
            Uuid::now_v7(),
            who.wa_id,
            who.bsuid,
            who.profile_name,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = inserted {
            return Ok(id);
        }
        // Another process inserted the same person a moment ago: read theirs.
    }
    Err(sqlx::Error::RowNotFound)
}

/// A contact by id.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<Contact>, sqlx::Error> {
    sqlx::query_as!(
        Contact,
        "SELECT id, wa_id, bsuid, profile_name FROM contacts WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}
