//! Conversations: one per (channel, contact).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use super::attachments::Attachment;
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

/// A conversation with one page of its messages and their attachments.
#[derive(Debug)]
pub struct Page {
    /// The conversation.
    pub conversation: ConversationRow,
    /// Its messages, newest first.
    pub messages: Vec<MessageRow>,
    /// The attachments of those messages, each message's together and in position order.
    pub files: Vec<Attachment>,
}

/// The channel of `phone_number_id` with, when it has conversation `id`, that conversation
/// and up to `limit` of its messages sent before `(at, before)`, newest first, with their
/// attachments; `None` when no channel has that number. One statement, where reading the
/// channel first, and the attachments after, took a round trip each on every
/// getConversationById.
pub async fn with_page(
    db: impl sqlx::PgExecutor<'_>,
    phone_number_id: &str,
    id: Uuid,
    at: DateTime<Utc>,
    before: Uuid,
    limit: i64,
) -> Result<Option<(Channel, Option<Page>)>, sqlx::Error> {
    // The channel and the conversation come once, in a row of their own (its conversation
    // columns null when the channel has no such conversation), and the messages in rows whose
    // other columns, but for the channel's id, are null; they are dropped when the conversation
    // is not on that channel. Repeating them on every message row made PostgreSQL send, and us
    // decode, 19 columns 31 times: it cost a fifth of the statement. A message with files
    // brings them along as JSON; a common table of the page, joined to the attachments, cost
    // every page a tenth more, files or not.
    let rows = sqlx::query!(
        r#"SELECT ch.id AS "channel_id?", ch.phone_number_id AS "phone_number_id?",
                  ch.display_phone_number, ch.verified_name, ch.installation_id, ch.company_id,
                  ch.pipedrive_channel_id, ch.mode AS "mode?: ChannelMode",
                  ch.created_at AS "channel_created_at?", ch.updated_at AS "channel_updated_at?",
                  c.id AS "id?", c.status AS "status?", c.seen AS "seen?", c.last_inbound_at,
                  c.last_message_at AS "last_message_at?", c.contact_id AS "contact_id?",
                  ct.wa_id, ct.bsuid, ct.profile_name,
                  NULL::uuid AS "message_id?", NULL::text AS "direction?: Direction",
                  NULL::text AS "sender_id?", NULL::text AS "kind?", NULL::text AS "body?",
                  NULL::text AS "message_status?: MessageStatus", NULL::integer AS error_code,
                  NULL::text AS error_title, NULL::text AS error_detail,
                  NULL::timestamptz AS "sent_at?", NULL::boolean AS "has_files?",
                  NULL::json AS "files?: Json<Vec<Attachment>>"
           FROM channels ch
           LEFT JOIN (conversations c JOIN contacts ct ON ct.id = c.contact_id)
                  ON c.channel_id = ch.id AND c.id = $2
           WHERE ch.phone_number_id = $1
           UNION ALL
           SELECT m.channel_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                  m.id, m.direction, m.sender_id, m.kind, m.body, m.status, m.error_code,
                  m.error_title, m.error_detail, m.sent_at, m.has_files,
                  CASE WHEN m.has_files THEN (
                      SELECT json_agg(json_build_object(
                                 'id', a.id, 'message_id', a.message_id, 'position', a.position,
                                 'media_id', a.media_id, 'mime_type', a.mime_type,
                                 'filename', a.filename, 'size_bytes', a.size_bytes,
                                 'sha256', a.sha256, 'status', a.status, 'error', a.error,
                                 'created_at', a.created_at)
                             ORDER BY a.position)
                      FROM attachments a WHERE a.message_id = m.id) END
           FROM (SELECT * FROM messages
                 WHERE conversation_id = $2 AND (sent_at, id) < ($3, $4)
                 ORDER BY sent_at DESC, id DESC
                 LIMIT $5) m"#,
        phone_number_id,
        id,
        at,
        before,
        limit,
    )
    .fetch_all(db)
    .await?;
    let mut found = None;
    let mut messages = Vec::with_capacity(rows.len());
    let mut files = Vec::new();
    for r in rows {
        if let Some(message_id) = r.message_id {
            let (
                Some(channel_id),
                Some(direction),
                Some(sender_id),
                Some(kind),
                Some(body),
                Some(status),
                Some(sent_at),
                Some(has_files),
            ) = (
                r.channel_id,
                r.direction,
                r.sender_id,
                r.kind,
                r.body,
                r.message_status,
                r.sent_at,
                r.has_files,
            )
            else {
                continue;
            };
            files.extend(r.files.map(|Json(of_message)| of_message).unwrap_or_default());
            messages.push(MessageRow {
                id: message_id,
                conversation_id: id,
                channel_id,
                direction,
                sender_id,
                kind,
                body,
                status,
                error_code: r.error_code,
                error_title: r.error_title,
                error_detail: r.error_detail,
                sent_at,
                has_files,
            });
            continue;
        }
        let (
            Some(channel_id),
            Some(phone_number_id),
            Some(mode),
            Some(channel_created_at),
            Some(channel_updated_at),
        ) = (
            r.channel_id,
            r.phone_number_id,
            r.mode,
            r.channel_created_at,
            r.channel_updated_at,
        )
        else {
            continue;
        };
        let channel = Channel {
            id: channel_id,
            phone_number_id,
            display_phone_number: r.display_phone_number,
            verified_name: r.verified_name,
            installation_id: r.installation_id,
            company_id: r.company_id,
            pipedrive_channel_id: r.pipedrive_channel_id,
            mode,
            created_at: channel_created_at,
            updated_at: channel_updated_at,
        };
        let conversation = match (r.id, r.status, r.seen, r.last_message_at, r.contact_id) {
            (Some(id), Some(status), Some(seen), Some(last_message_at), Some(contact_id)) => {
                Some(ConversationRow {
                    id,
                    channel_id,
                    status,
                    seen,
                    last_inbound_at: r.last_inbound_at,
                    last_message_at,
                    contact_id,
                    wa_id: r.wa_id,
                    bsuid: r.bsuid,
                    profile_name: r.profile_name,
                })
            }
            _ => None,
        };
        found = Some((channel, conversation));
    }
    let Some((channel, conversation)) = found else {
        return Ok(None);
    };
    let Some(conversation) = conversation else {
        return Ok(Some((channel, None)));
    };
    // A union's rows come in no defined order.
    messages.sort_unstable_by_key(|m| std::cmp::Reverse((m.sent_at, m.id)));
    Ok(Some((
        channel,
        Some(Page {
            conversation,
            messages,
            files,
        }),
    )))
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
    // Sorted as one, the company's conversations were all read, and joined to their contacts,
    // at every poll. Here each channel gives its newest `limit` unseen ones by the unseen index,
    // and only when those are fewer than `limit` its newest seen ones by the activity index.
    sqlx::query_as!(
        ConversationRow,
        r#"WITH live AS (SELECT id FROM channels WHERE company_id = $1 AND mode <> 'disabled'),
           listed AS (
               (SELECT c.* FROM live CROSS JOIN LATERAL (
                    SELECT * FROM conversations c WHERE c.channel_id = live.id AND NOT c.seen
                    ORDER BY c.last_message_at DESC, c.id DESC LIMIT $2) c
                ORDER BY c.last_message_at DESC, c.id DESC LIMIT $2)
               UNION ALL
               (SELECT c.* FROM live CROSS JOIN LATERAL (
                    SELECT * FROM conversations c WHERE c.channel_id = live.id AND c.seen
                    ORDER BY c.last_message_at DESC, c.id DESC LIMIT $2) c
                ORDER BY c.last_message_at DESC, c.id DESC LIMIT $2)
               LIMIT $2)
           SELECT c.id AS "id!", c.channel_id AS "channel_id!", c.status AS "status!",
                  c.seen AS "seen!", c.last_inbound_at, c.last_message_at AS "last_message_at!",
                  c.contact_id AS "contact_id!", ct.wa_id, ct.bsuid, ct.profile_name
           FROM listed c
           JOIN contacts ct ON ct.id = c.contact_id
           ORDER BY c.seen, c.last_message_at DESC, c.id DESC"#,
        company_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many conversations on `company_id`'s live channels nobody has seen yet (read from the
/// unseen index when they are few).
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
