//! Conversations: one per (channel, contact).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::channels::{Channel, ChannelMode};
use super::messages::{Direction, MessageRow, MessageStatus};

/// A customer first met in an ingest batch: their contact and their conversation on a channel.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// The contact's id.
    pub contact_id: Uuid,
    /// The conversation's id.
    pub conversation_id: Uuid,
    /// The channel they wrote to (or, for echoes, were written from).
    pub channel_id: Uuid,
    /// Phone number digits.
    pub wa_id: Option<String>,
    /// Business-scoped user id.
    pub bsuid: Option<String>,
    /// Profile name, when the webhook carried one.
    pub profile_name: Option<String>,
    /// The conversation's first activity.
    pub at: DateTime<Utc>,
}

/// Creates contacts together with their conversations, in one statement (customers sharing a
/// contact id are one contact, stored as the first of them names it). Fails with a unique
/// violation when one of their identifiers is stored already, or held by two contacts among
/// them: nothing is then created, and the caller looks those customers up instead of splitting
/// one in two.
pub async fn create_with_contacts(
    conn: &mut PgConnection,
    customers: &[NewCustomer],
) -> Result<(), sqlx::Error> {
    let column = |f: fn(&NewCustomer) -> Option<String>| customers.iter().map(f).collect::<Vec<_>>();
    let contact_ids: Vec<Uuid> = customers.iter().map(|c| c.contact_id).collect();
    let conversation_ids: Vec<Uuid> = customers.iter().map(|c| c.conversation_id).collect();
    let channel_ids: Vec<Uuid> = customers.iter().map(|c| c.channel_id).collect();
    let ats: Vec<DateTime<Utc>> = customers.iter().map(|c| c.at).collect();
    sqlx::query!(
        r#"WITH input AS (
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::uuid[],
                                    $7::timestamptz[])
                   WITH ORDINALITY AS i(contact_id, wa_id, bsuid, profile_name, conversation_id, channel_id,
                                        at, n)),
           contact AS (
               INSERT INTO contacts (id, wa_id, bsuid, profile_name)
               SELECT DISTINCT ON (contact_id) contact_id, wa_id, bsuid, NULLIF(profile_name, '')
               FROM input ORDER BY contact_id, n
               RETURNING id)
           INSERT INTO conversations (id, channel_id, contact_id, last_message_at)
           SELECT i.conversation_id, i.channel_id, i.contact_id, i.at
           FROM input i JOIN contact c ON c.id = i.contact_id
           ORDER BY i.n"#,
        &contact_ids,
        &column(|c| c.wa_id.clone()) as &[Option<String>],
        &column(|c| c.bsuid.clone()) as &[Option<String>],
        &column(|c| c.profile_name.clone()) as &[Option<String>],
        &conversation_ids,
        &channel_ids,
        &ats,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The conversation of `contact` on `channel`, created if new (with its first activity at `at`).
pub async fn upsert(
    conn: &mut PgConnection,
    channel_id: Uuid,
    contact_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    if let Some(id) = sqlx::query_scalar!(
        "SELECT id FROM conversations WHERE channel_id = $1 AND contact_id = $2",
        channel_id,
        contact_id
    )
    .fetch_optional(&mut *conn)
    .await?
    {
        return Ok(id);
    }
    sqlx::query_scalar!(
        r#"INSERT INTO conversations (id, channel_id, contact_id, last_message_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (channel_id, contact_id) DO UPDATE SET updated_at = conversations.updated_at
           RETURNING id"#,
        Uuid::now_v7(),
        channel_id,
        contact_id,
        at,
    )
    .fetch_one(conn)
    .await
}

/// Records a message of ours (or an echo) sent at `at`: activity order only.
pub async fn record_outbound(
    conn: &mut PgConnection,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE conversations SET last_message_at = GREATEST(last_message_at, $2), updated_at = now()
           WHERE id = $1"#,
        id,
        at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A conversation with its customer, as the provider endpoints show it.
#[derive(Debug, Clone)]
pub struct ConversationRow {
    /// Our id.
    pub id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// open or closed.
    pub status: String,
    /// Seen by a salesperson.
    pub seen: bool,
    /// Last customer message (the reply window runs from it).
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Activity order key.
    pub last_message_at: DateTime<Utc>,
    /// The customer.
    pub contact_id: Uuid,
    /// Customer's phone digits.
    pub wa_id: Option<String>,
    /// Customer's business-scoped id.
    pub bsuid: Option<String>,
    /// Customer's WhatsApp profile name.
    pub profile_name: Option<String>,
}

/// Conversations of a channel strictly older in activity order than `(at, id)`, newest first.
pub async fn page(
    db: impl sqlx::PgExecutor<'_>,
    channel_id: Uuid,
    at: DateTime<Utc>,
    id: Uuid,
    limit: i64,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.channel_id, c.status, c.seen, c.last_inbound_at, c.last_message_at,
                  c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c JOIN contacts ct ON ct.id = c.contact_id
           WHERE c.channel_id = $1 AND (c.last_message_at, c.id) < ($2, $3)
           ORDER BY c.last_message_at DESC, c.id DESC
           LIMIT $4"#,
        channel_id,
        at,
        id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One conversation of a channel.
pub async fn find_on_channel(
    db: impl sqlx::PgExecutor<'_>,
    channel_id: Uuid,
    id: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.channel_id, c.status, c.seen, c.last_inbound_at, c.last_message_at,
                  c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c JOIN contacts ct ON ct.id = c.contact_id
           WHERE c.channel_id = $1 AND c.id = $2"#,
        channel_id,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The channel of `phone_number_id` with, when it has conversation `id`, that conversation
/// and up to `limit` of its messages sent before `(at, before)`, newest first; `None` when no
/// channel has that number. One statement, where reading the channel first took a round trip
/// of its own on every getConversationById.
pub async fn with_page(
    db: impl sqlx::PgExecutor<'_>,
    phone_number_id: &str,
    id: Uuid,
    at: DateTime<Utc>,
    before: Uuid,
    limit: i64,
) -> Result<Option<(Channel, Option<(ConversationRow, Vec<MessageRow>)>)>, sqlx::Error> {
    // The channel's and the conversation's columns come with every message row; a conversation
    // without messages (before `at`) is one row whose message columns are all null, and so is
    // a channel without that conversation, whose conversation columns are null too.
    let rows = sqlx::query!(
        r#"SELECT ch.id AS channel_id, ch.phone_number_id, ch.display_phone_number, ch.verified_name,
                  ch.installation_id, ch.company_id, ch.pipedrive_channel_id, ch.mode AS "mode: ChannelMode",
                  ch.created_at AS channel_created_at, ch.updated_at AS channel_updated_at,
                  c.id AS "id?", c.status AS "status?", c.seen AS "seen?", c.last_inbound_at,
                  c.last_message_at AS "last_message_at?", c.contact_id AS "contact_id?",
                  ct.wa_id, ct.bsuid, ct.profile_name,
                  m.id AS "message_id?", m.direction AS "direction?: Direction",
                  m.sender_id AS "sender_id?", m.kind AS "kind?", m.body AS "body?",
                  m.status AS "message_status?: MessageStatus", m.error_code AS "error_code?",
                  m.error_title AS "error_title?", m.error_detail AS "error_detail?",
                  m.sent_at AS "sent_at?", m.has_files AS "has_files?"
           FROM channels ch
           LEFT JOIN (conversations c JOIN contacts ct ON ct.id = c.contact_id)
                  ON c.channel_id = ch.id AND c.id = $2
           LEFT JOIN LATERAL (
               SELECT id, direction, sender_id, kind, body, status, error_code, error_title,
                      error_detail, sent_at,
                      EXISTS (SELECT 1 FROM attachments a WHERE a.message_id = messages.id) AS has_files
               FROM messages
               WHERE conversation_id = c.id AND (sent_at, id) < ($3, $4)
               ORDER BY sent_at DESC, id DESC
               LIMIT $5) m ON true
           WHERE ch.phone_number_id = $1
           ORDER BY m.sent_at DESC, m.id DESC"#,
        phone_number_id,
        id,
        at,
        before,
        limit,
    )
    .fetch_all(db)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let channel = Channel {
        id: first.channel_id,
        phone_number_id: first.phone_number_id.clone(),
        display_phone_number: first.display_phone_number.clone(),
        verified_name: first.verified_name.clone(),
        installation_id: first.installation_id,
        company_id: first.company_id,
        pipedrive_channel_id: first.pipedrive_channel_id.clone(),
        mode: first.mode,
        created_at: first.channel_created_at,
        updated_at: first.channel_updated_at,
    };
    let conversation = match (
        first.id,
        &first.status,
        first.seen,
        first.last_message_at,
        first.contact_id,
    ) {
        (Some(id), Some(status), Some(seen), Some(last_message_at), Some(contact_id)) => ConversationRow {
            id,
            channel_id: first.channel_id,
            status: status.clone(),
            seen,
            last_inbound_at: first.last_inbound_at,
            last_message_at,
            contact_id,
            wa_id: first.wa_id.clone(),
            bsuid: first.bsuid.clone(),
            profile_name: first.profile_name.clone(),
        },
        _ => return Ok(Some((channel, None))),
    };
    let messages = rows
        .into_iter()
        .filter_map(|r| {
            Some(MessageRow {
                id: r.message_id?,
                conversation_id: conversation.id,
                channel_id: r.channel_id,
                direction: r.direction?,
                sender_id: r.sender_id?,
                kind: r.kind?,
                body: r.body?,
                status: r.message_status?,
                error_code: r.error_code,
                error_title: r.error_title,
                error_detail: r.error_detail,
                sent_at: r.sent_at?,
                has_files: r.has_files?,
            })
        })
        .collect();
    Ok(Some((channel, Some((conversation, messages)))))
}

/// Whether `contact_id` has a conversation on `channel_id`.
pub async fn exists(
    db: impl sqlx::PgExecutor<'_>,
    channel_id: Uuid,
    contact_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM conversations WHERE channel_id = $1 AND contact_id = $2) AS "exists!""#,
        channel_id,
        contact_id
    )
    .fetch_one(db)
    .await
}

/// The conversations of the customers with these phone digits (`wa_id`s) on `company_id`'s
/// live channels, most recent first.
pub async fn of_wa_ids_in_company(
    db: impl sqlx::PgExecutor<'_>,
    company_id: i64,
    wa_ids: &[String],
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.channel_id, c.status, c.seen, c.last_inbound_at, c.last_message_at,
                  c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c
           JOIN contacts ct ON ct.id = c.contact_id
           JOIN channels ch ON ch.id = c.channel_id
           WHERE ch.company_id = $1 AND ch.mode <> 'disabled' AND ct.wa_id = ANY($2)
           ORDER BY c.last_message_at DESC, c.id DESC"#,
        company_id,
        wa_ids,
    )
    .fetch_all(db)
    .await
}

/// The newest `limit` conversations on `company_id`'s live channels, unseen ones first.
pub async fn recent_in_company(
    db: impl sqlx::PgExecutor<'_>,
    company_id: i64,
    limit: i64,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.channel_id, c.status, c.seen, c.last_inbound_at, c.last_message_at,
                  c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c
           JOIN contacts ct ON ct.id = c.contact_id
           JOIN channels ch ON ch.id = c.channel_id
           WHERE ch.company_id = $1 AND ch.mode <> 'disabled'
           ORDER BY c.seen, c.last_message_at DESC, c.id DESC
           LIMIT $2"#,
        company_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many conversations on `company_id`'s live channels nobody has seen yet.
pub async fn count_unseen_in_company(
    db: impl sqlx::PgExecutor<'_>,
    company_id: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM conversations c JOIN channels ch ON ch.id = c.channel_id
           WHERE ch.company_id = $1 AND ch.mode <> 'disabled' AND NOT c.seen"#,
        company_id,
    )
    .fetch_one(db)
    .await
}

/// One conversation on a live channel of `company_id`.
pub async fn find_in_company(
    db: impl sqlx::PgExecutor<'_>,
    company_id: i64,
    id: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversationRow,
        r#"SELECT c.id, c.channel_id, c.status, c.seen, c.last_inbound_at, c.last_message_at,
                  c.contact_id, ct.wa_id, ct.bsuid, ct.profile_name
           FROM conversations c
           JOIN contacts ct ON ct.id = c.contact_id
           JOIN channels ch ON ch.id = c.channel_id
           WHERE ch.company_id = $1 AND ch.mode <> 'disabled' AND c.id = $2"#,
        company_id,
        id,
    )
    .fetch_optional(db)
    .await
}

/// Marks a conversation as seen by a salesperson.
pub async fn mark_seen(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE conversations SET seen = true, updated_at = now() WHERE id = $1 AND NOT seen",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}
