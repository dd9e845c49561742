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

/// A contact found by [`find_refreshed`].
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// The contact's id.
    pub contact_id: Uuid,
    /// Its conversation on the channel asked about, if it has one.
    pub conversation_id: Option<Uuid>,
}

/// Finds the contact by phone or BSUID (the phone wins when they point at different contacts)
/// and refreshes its profile name and missing identifiers, together with its conversation on
/// `channel_id`: one round trip for the common case of a customer writing again.
pub async fn find_refreshed(
    conn: &mut PgConnection,
    who: &Identity<'_>,
    channel_id: Option<Uuid>,
) -> Result<Option<Known>, sqlx::Error> {
    let found = sqlx::query!(
        r#"WITH found AS (
               SELECT id FROM contacts WHERE wa_id = $1 OR bsuid = $2
               ORDER BY (wa_id = $1) DESC NULLS LAST LIMIT 1),
           refreshed AS (
               UPDATE contacts SET
                   profile_name = COALESCE(NULLIF($3, ''), contacts.profile_name),
                   wa_id = COALESCE(contacts.wa_id, $1),
                   bsuid = COALESCE(contacts.bsuid, $2),
                   updated_at = now()
               FROM found
               WHERE contacts.id = found.id
                 AND (contacts.profile_name IS DISTINCT FROM COALESCE(NULLIF($3, ''), contacts.profile_name)
                      OR (contacts.wa_id IS NULL AND $1::text IS NOT NULL)
                      OR (contacts.bsuid IS NULL AND $2::text IS NOT NULL)))
           SELECT found.id AS "contact_id!", c.id AS "conversation_id?"
           FROM found LEFT JOIN conversations c ON c.channel_id = $4 AND c.contact_id = found.id"#,
        who.wa_id,
        who.bsuid,
        who.profile_name,
        channel_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(found.map(|row| Known {
        contact_id: row.contact_id,
        conversation_id: row.conversation_id,
    }))
}

/// A customer as [`find_many`] found it.
#[derive(Debug, Clone)]
pub struct Found {
    /// Position of the identity asked about (1-based).
    pub n: i64,
    /// The contact's id.
    pub contact_id: Uuid,
    /// Its phone digits.
    pub wa_id: Option<String>,
    /// Its business-scoped id.
    pub bsuid: Option<String>,
    /// Its profile name.
    pub profile_name: Option<String>,
    /// Its conversation on the channel asked about, if any.
    pub conversation_id: Option<Uuid>,
}

/// The contacts of several (channel, phone, BSUID) identities, matched as [`find_refreshed`]
/// does, with their conversations on those channels, in one round trip and without changing
/// anything. Identities without a contact are left out.
pub async fn find_many(
    conn: &mut PgConnection,
    channel_ids: &[Uuid],
    wa_ids: &[Option<String>],
    bsuids: &[Option<String>],
) -> Result<Vec<Found>, sqlx::Error> {
    // A lone identity has a statement of its own: PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten identities), which costs more than running it.
    if let ([channel_id], [wa_id], [bsuid]) = (channel_ids, wa_ids, bsuids) {
        return sqlx::query_as!(
            Found,
            r#"SELECT 1::bigint AS "n!", ct.id AS "contact_id!", ct.wa_id, ct.bsuid, ct.profile_name,
                      c.id AS "conversation_id?"
               FROM (SELECT id, wa_id, bsuid, profile_name FROM contacts
                     WHERE wa_id = $2 OR bsuid = $3
                     ORDER BY (wa_id = $2) DESC NULLS LAST LIMIT 1) ct
               LEFT JOIN conversations c ON c.channel_id = $1 AND c.contact_id = ct.id"#,
            channel_id,
            wa_id.as_deref(),
            bsuid.as_deref(),
        )
        .fetch_all(conn)
        .await;
    }
    sqlx::query_as!(
        Found,
        r#"SELECT i.n AS "n!", ct.id AS "contact_id!", ct.wa_id, ct.bsuid, ct.profile_name,
                  c.id AS "conversation_id?"
           FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS i(channel_id, wa_id, bsuid, n)
           CROSS JOIN LATERAL (
               SELECT id, wa_id, bsuid, profile_name FROM contacts
               WHERE wa_id = i.wa_id OR bsuid = i.bsuid
               ORDER BY (wa_id = i.wa_id) DESC NULLS LAST LIMIT 1) ct
           LEFT JOIN conversations c ON c.channel_id = i.channel_id AND c.contact_id = ct.id"#,
        channel_ids,
        wa_ids as &[Option<String>],
        bsuids as &[Option<String>],
    )
    .fetch_all(conn)
    .await
}

/// Finds the contact by phone or BSUID, creating it if new, and refreshes its profile name and
/// missing identifiers. Returns its id.
pub async fn upsert(conn: &mut PgConnection, who: &Identity<'_>) -> Result<Uuid, sqlx::Error> {
    for _ in 0..2 {
        if let Some(known) = find_refreshed(conn, who, None).await? {
            return Ok(known.contact_id);
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
