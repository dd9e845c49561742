//! Messages in both directions, their WhatsApp ids and their delivery status.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::channels::{Channel, ChannelMode};
use super::installations::{Credentials, InstallationStatus};
use super::jobs::{self, Job, NewJob, Taker};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The customer.
    Inbound,
    /// The business (from Pipedrive, or echoed from the WhatsApp Business app).
    Outbound,
}

impl Direction {
    /// As stored and labelled in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Where a message is in its life. Positive statuses only move forward
/// (queued < sending < sent < delivered < read); failed is terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Stored, waiting to be sent to WhatsApp.
    Queued,
    /// A send attempt is under way.
    Sending,
    /// Accepted by WhatsApp (inbound messages are stored as sent).
    Sent,
    /// On the customer's device.
    Delivered,
    /// Read by the customer.
    Read,
    /// Could not be delivered.
    Failed,
}

impl MessageStatus {
    /// Parses a WhatsApp status webhook value (`played` counts as read).
    pub fn from_webhook(value: &str) -> Option<Self> {
        match value {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" | "played" => Some(Self::Read),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    /// The status as Pipedrive's contract spells it (it has no "not sent yet").
    pub fn for_pipedrive(self) -> &'static str {
        match self {
            Self::Queued | Self::Sending | Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Our id.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// Who wrote it.
    pub direction: Direction,
    /// WhatsApp's id, once known.
    pub wamid: Option<&'a str>,
    /// Participant id of the writer.
    pub sender_id: &'a str,
    /// WhatsApp message type.
    pub kind: &'a str,
    /// Rendered text.
    pub body: &'a str,
    /// The item as WhatsApp sent it.
    pub raw: Option<&'a serde_json::Value>,
    /// Initial status.
    pub status: MessageStatus,
    /// The wamid it replies to.
    pub reply_to_wamid: Option<&'a str>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
}

/// Stores a message unless one with the same wamid exists on the channel; true when stored.
pub async fn insert(conn: &mut PgConnection, m: &NewMessage<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        r#"INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind,
                                 body, raw, status, reply_to_wamid, sent_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (channel_id, wamid) DO NOTHING"#,
        m.id,
        m.conversation_id,
        m.channel_id,
        m.direction as Direction,
        m.wamid,
        m.sender_id,
        m.kind,
        m.body,
        m.raw,
        m.status as MessageStatus,
        m.reply_to_wamid,
        m.sent_at,
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// A message that came in through a webhook, with the delivery to queue once it is stored.
#[derive(Debug, Clone)]
pub struct Received {
    /// Our id.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// Inbound, or an echo of a message the business sent from its phone.
    pub direction: Direction,
    /// WhatsApp's id.
    pub wamid: String,
    /// Participant id of the writer.
    pub sender_id: String,
    /// WhatsApp message type.
    pub kind: String,
    /// Rendered text.
    pub body: String,
    /// The item as WhatsApp sent it.
    pub raw: serde_json::Value,
    /// The wamid it replies to.
    pub reply_to_wamid: Option<String>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Written by the customer (opens the reply window and marks the conversation unseen).
    pub from_customer: bool,
    /// Its delivery to Pipedrive.
    pub delivery: NewJob,
}

/// What [`insert_received`] stored.
#[derive(Debug, Default)]
pub struct Stored {
    /// The messages stored (the others were duplicates).
    pub ids: Vec<Uuid>,
    /// Their deliveries inserted already leased to the taker, to be run by it once committed.
    pub taken: Vec<Job>,
}

/// A row of [`insert_received`]: a message stored, or a delivery taken.
struct StoredRow {
    message_id: Option<Uuid>,
    job_id: Option<i64>,
    kind: Option<String>,
    payload: Option<serde_json::Value>,
    ordering_key: Option<String>,
    attempts: Option<i32>,
    created_at: Option<DateTime<Utc>>,
}

/// Stores received messages (as `sent`), skipping those whose wamid is already stored on their
/// channel, and, for those stored only, in the same statement: moves their conversations'
/// activity forward (for customer messages also the reply window, `open` and unseen) and
/// queues their deliveries in the given order.
///
/// With a `taker`, the deliveries of an ordering key that has no unfinished job are inserted
/// leased to it, as a claim would leave them, for as many keys as it has runs left (counted
/// down): the taker runs them, in order, once the transaction commits, without a claim.
pub async fn insert_received(
    conn: &mut PgConnection,
    received: &[Received],
    taker: Option<&mut Taker>,
) -> Result<Stored, sqlx::Error> {
    if received.is_empty() {
        return Ok(Stored::default());
    }
    let mut taker = taker.filter(|t| t.runs > 0);
    let taken = match taker {
        None => vec![false; received.len()],
        Some(ref mut taker) => {
            let mut keys: Vec<String> = received
                .iter()
                .filter_map(|r| r.delivery.ordering_key.clone())
                .collect();
            keys.sort_unstable();
            keys.dedup();
            // Decided before the insert, by a statement of its own: inside it, the test made
            // PostgreSQL plan the insert anew at every call (0.7 ms), as a plan for the batch
            // at hand then looked much cheaper than the generic one.
            let busy: HashSet<String> = jobs::unfinished_keys(&mut *conn, &keys)
                .await?
                .into_iter()
                .collect();
            let keys = received.iter().map(|r| r.delivery.ordering_key.as_deref());
            take(keys, &busy, &mut taker.runs)
        }
    };
    let column = |f: fn(&Received) -> String| received.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = received.iter().map(|r| r.id).collect();
    let conversation_ids: Vec<Uuid> = received.iter().map(|r| r.conversation_id).collect();
    let channel_ids: Vec<Uuid> = received.iter().map(|r| r.channel_id).collect();
    let raws: Vec<serde_json::Value> = received.iter().map(|r| r.raw.clone()).collect();
    let replies: Vec<Option<String>> = received.iter().map(|r| r.reply_to_wamid.clone()).collect();
    let sent_ats: Vec<DateTime<Utc>> = received.iter().map(|r| r.sent_at).collect();
    let from_customer: Vec<bool> = received.iter().map(|r| r.from_customer).collect();
    let payloads: Vec<serde_json::Value> = received.iter().map(|r| r.delivery.payload.clone()).collect();
    let ordering_keys: Vec<Option<String>> =
        received.iter().map(|r| r.delivery.ordering_key.clone()).collect();
    let dedup_keys: Vec<Option<String>> = received.iter().map(|r| r.delivery.dedup_key.clone()).collect();
    let rows = sqlx::query_as!(
        StoredRow,
        r#"WITH input AS (
               SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::text[], $9::jsonb[], $10::text[], $11::timestamptz[],
                                    $12::bool[], $13::text[], $14::jsonb[], $15::text[], $16::text[],
                                    $17::bool[])
                   WITH ORDINALITY AS i(id, conversation_id, channel_id, direction, wamid, sender_id, kind, body,
                                        raw, reply_to_wamid, sent_at, from_customer, job_kind,
                                        job_payload, job_ordering_key, job_dedup_key, job_taken, n)),
           stored AS (
               INSERT INTO messages (id, conversation_id, channel_id, direction, wamid, sender_id, kind,
                                     body, raw, status, reply_to_wamid, sent_at)
               SELECT id, conversation_id, channel_id, direction, wamid, sender_id, kind, body, raw, 'sent',
                      reply_to_wamid, sent_at
               FROM input ORDER BY n
               ON CONFLICT (channel_id, wamid) DO NOTHING
               RETURNING id),
           activity AS (
               UPDATE conversations c SET
                   last_inbound_at = GREATEST(c.last_inbound_at, a.last_inbound_at),
                   last_message_at = GREATEST(c.last_message_at, a.last_message_at),
                   seen = c.seen AND NOT a.from_customer,
                   status = CASE WHEN a.from_customer THEN 'open' ELSE c.status END,
                   updated_at = now()
               FROM (SELECT i.conversation_id,
                            max(i.sent_at) FILTER (WHERE i.from_customer) AS last_inbound_at,
                            max(i.sent_at) AS last_message_at,
                            bool_or(i.from_customer) AS from_customer
                     FROM input i JOIN stored s ON s.id = i.id
                     GROUP BY i.conversation_id) a
               WHERE c.id = a.conversation_id),
           queued AS (
               INSERT INTO jobs (kind, payload, ordering_key, dedup_key, run_at, state, locked_by,
                                 locked_until, attempts)
               SELECT i.job_kind, i.job_payload, i.job_ordering_key, i.job_dedup_key, now(),
                      CASE WHEN i.job_taken THEN 'running' ELSE 'queued' END,
                      CASE WHEN i.job_taken THEN $18 END,
                      CASE WHEN i.job_taken THEN clock_timestamp() + make_interval(secs => $19) END,
                      CASE WHEN i.job_taken THEN 1 ELSE 0 END
               FROM input i JOIN stored s ON s.id = i.id
               ORDER BY i.n
               ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
               RETURNING id, kind, payload, ordering_key, attempts, created_at, state)
           SELECT id AS "message_id?", NULL::bigint AS "job_id?", NULL::text AS "kind?",
                  NULL::jsonb AS "payload?", NULL::text AS "ordering_key?", NULL::integer AS "attempts?",
                  NULL::timestamptz AS "created_at?"
           FROM stored
           UNION ALL
           SELECT NULL, id, kind, payload, ordering_key, attempts, created_at
           FROM queued WHERE state = 'running'"#,
        &ids,
        &conversation_ids,
        &channel_ids,
        &column(|r| r.direction.as_str().to_string()),
        &column(|r| r.wamid.clone()),
        &column(|r| r.sender_id.clone()),
        &column(|r| r.kind.clone()),
        &column(|r| r.body.clone()),
        &raws,
        &replies as &[Option<String>],
        &sent_ats,
        &from_customer,
        &column(|r| r.delivery.kind.to_string()),
        &payloads,
        &ordering_keys as &[Option<String>],
        &dedup_keys as &[Option<String>],
        &taken,
        taker.as_ref().map(|t| t.worker.as_str()),
        taker.as_ref().map_or(0.0, |t| t.lease_seconds),
    )
    .fetch_all(conn)
    .await?;
    let mut stored = Stored::default();
    for row in rows {
        if let Some(id) = row.message_id {
            stored.ids.push(id);
            continue;
        }
        // Never null in the UNION's second branch, which selects them from the inserted jobs.
        if let (Some(id), Some(kind), Some(payload), Some(attempts), Some(created_at)) =
            (row.job_id, row.kind, row.payload, row.attempts, row.created_at)
        {
            stored.taken.push(Job {
                id,
                kind,
                payload,
                ordering_key: row.ordering_key,
                attempts,
                created_at,
            });
        }
    }
    stored.taken.sort_by_key(|job| job.id);
    Ok(stored)
}

/// Which deliveries, given by ordering key, to lease at their insert: those of the first `runs`
/// keys (or single jobs without one) that are not `busy`, all of a key or none of it, so that
/// none is leased ahead of an earlier one of its key left queued.
fn take<'a>(
    keys: impl Iterator<Item = Option<&'a str>>,
    busy: &HashSet<String>,
    runs: &mut usize,
) -> Vec<bool> {
    let mut decided: HashMap<&str, bool> = HashMap::new();
    let mut taken = Vec::new();
    for key in keys {
        let take = match key.and_then(|key| decided.get(key)) {
            Some(&take) => take,
            None => {
                let take = *runs > 0 && key.is_none_or(|key| !busy.contains(key));
                if take {
                    *runs -= 1;
                }
                if let Some(key) = key {
                    decided.insert(key, take);
                }
                take
            }
        };
        taken.push(take);
    }
    taken
}

/// A stored message, located by WhatsApp id.
#[derive(Debug, Clone)]
pub struct Located {
    /// Our id.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// Its rendered text.
    pub body: String,
}

/// The message with `wamid` on `channel_id`.
pub async fn find_by_wamid(
    conn: &mut PgConnection,
    channel_id: Uuid,
    wamid: &str,
) -> Result<Option<Located>, sqlx::Error> {
    sqlx::query_as!(
        Located,
        "SELECT id, conversation_id, body FROM messages WHERE channel_id = $1 AND wamid = $2",
        channel_id,
        wamid
    )
    .fetch_optional(conn)
    .await
}

/// The message with our `id` on `channel_id`.
pub async fn find_on_channel(
    conn: &mut PgConnection,
    channel_id: Uuid,
    id: Uuid,
) -> Result<Option<Located>, sqlx::Error> {
    sqlx::query_as!(
        Located,
        "SELECT id, conversation_id, body FROM messages WHERE channel_id = $1 AND id = $2",
        channel_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Failure details of a `failed` status.
#[derive(Debug, Clone, Default)]
pub struct Failure<'a> {
    /// Meta's error code.
    pub code: Option<i32>,
    /// Meta's error title.
    pub title: Option<&'a str>,
    /// Meta's human-readable details.
    pub detail: Option<&'a str>,
}

/// Moves a message to `status` if that is a step forward (failed only from a not-yet-read,
/// not-failed state). Returns the conversation id when the status changed.
pub async fn advance_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: MessageStatus,
    failure: &Failure<'_>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE messages SET status = $2,
               error_code = COALESCE($3, error_code),
               error_title = COALESCE($4, error_title),
               error_detail = COALESCE($5, error_detail),
               updated_at = now()
           WHERE id = $1 AND status <> 'failed' AND (
               CASE $2 WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2
                       WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE 5 END
             > CASE status WHEN 'queued' THEN 0 WHEN 'sending' THEN 1 WHEN 'sent' THEN 2
                       WHEN 'delivered' THEN 3 WHEN 'read' THEN 4 ELSE 5 END)
             AND NOT ($2 = 'failed' AND status = 'read')
           RETURNING conversation_id"#,
        id,
        status as MessageStatus,
        failure.code,
        failure.title,
        failure.detail,
    )
    .fetch_optional(conn)
    .await
}

/// Replaces a message's rendered text (edits and deletions by the customer).
pub async fn set_body(conn: &mut PgConnection, id: Uuid, body: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE messages SET body = $2, updated_at = now() WHERE id = $1",
        id,
        body
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The conversation a message belongs to.
pub async fn conversation_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!("SELECT conversation_id FROM messages WHERE id = $1", id)
        .fetch_optional(conn)
        .await
}

/// A message as the provider endpoints and deliveries show it.
#[derive(Debug, Clone)]
pub struct MessageRow {
    /// Our id.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// Its channel.
    pub channel_id: Uuid,
    /// Who wrote it.
    pub direction: Direction,
    /// Participant id of the writer.
    pub sender_id: String,
    /// WhatsApp type.
    pub kind: String,
    /// Rendered text.
    pub body: String,
    /// Delivery status.
    pub status: MessageStatus,
    /// Meta's error code when failed.
    pub error_code: Option<i32>,
    /// Meta's error title when failed.
    pub error_title: Option<String>,
    /// Meta's details when failed.
    pub error_detail: Option<String>,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Whether it has attachments (most messages have none, and then none are looked up).
    pub has_files: bool,
}

/// The newest `limit` messages of each of `conversation_ids`, newest first per conversation, in
/// one round trip.
pub async fn latest_of(
    db: impl sqlx::PgExecutor<'_>,
    conversation_ids: &[Uuid],
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT m.id AS "id!", m.conversation_id AS "conversation_id!", m.channel_id AS "channel_id!",
                  m.direction AS "direction!: Direction", m.sender_id AS "sender_id!", m.kind AS "kind!",
                  m.body AS "body!", m.status AS "status!: MessageStatus", m.error_code, m.error_title,
                  m.error_detail, m.sent_at AS "sent_at!",
                  m.has_files
           FROM unnest($1::uuid[]) AS c(id)
           CROSS JOIN LATERAL (
               SELECT * FROM messages WHERE conversation_id = c.id
               ORDER BY sent_at DESC, id DESC LIMIT $2) m"#,
        conversation_ids,
        limit,
    )
    .fetch_all(db)
    .await
}

/// One message of a channel (optionally required to be in `conversation_id`).
pub async fn find_row(
    db: impl sqlx::PgExecutor<'_>,
    channel_id: Uuid,
    id: Uuid,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT id, conversation_id, channel_id, direction AS "direction: Direction", sender_id, kind, body,
                  status AS "status: MessageStatus", error_code, error_title, error_detail, sent_at,
                  has_files
           FROM messages WHERE channel_id = $1 AND id = $2"#,
        channel_id,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The message a WhatsApp id belongs to: the message's own wamid, or the wamid of one of its
/// extra media parts.
pub async fn find_by_any_wamid(
    conn: &mut PgConnection,
    channel_id: Uuid,
    wamid: &str,
) -> Result<Option<Located>, sqlx::Error> {
    sqlx::query_as!(
        Located,
        r#"SELECT id AS "id!", conversation_id AS "conversation_id!", body AS "body!" FROM (
               SELECT id, conversation_id, body FROM messages WHERE channel_id = $1 AND wamid = $2
               UNION ALL
               SELECT m.id, m.conversation_id, m.body FROM attachments a JOIN messages m ON m.id = a.message_id
               WHERE m.channel_id = $1 AND a.wamid = $2
           ) found LIMIT 1"#,
        channel_id,
        wamid
    )
    .fetch_optional(conn)
    .await
}

/// Records WhatsApp's id of the message itself unless it already has one.
pub async fn set_wamid_if_missing(conn: &mut PgConnection, id: Uuid, wamid: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE messages SET wamid = $2, updated_at = now() WHERE id = $1 AND wamid IS NULL",
        id,
        wamid
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Everything the send job needs about an outbound message.
#[derive(Debug, Clone)]
pub struct SendView {
    /// Our id.
    pub id: Uuid,
    /// Its conversation.
    pub conversation_id: Uuid,
    /// Text typed in Pipedrive.
    pub body: String,
    /// `{"template": …}` for template sends.
    pub raw: Option<serde_json::Value>,
    /// Current status.
    pub status: MessageStatus,
    /// WhatsApp id of the message itself, once sent.
    pub wamid: Option<String>,
    /// When the last send attempt started.
    pub send_attempted_at: Option<DateTime<Utc>>,
    /// Last customer message of the conversation.
    pub last_inbound_at: Option<DateTime<Utc>>,
    /// Recipient's phone digits.
    pub wa_id: Option<String>,
    /// Recipient's business-scoped id.
    pub bsuid: Option<String>,
    /// Sending number.
    pub phone_number_id: String,
}

/// The send view of an outbound message.
pub async fn send_view(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<SendView>, sqlx::Error> {
    sqlx::query_as!(
        SendView,
        r#"SELECT m.id, m.conversation_id, m.body, m.raw, m.status AS "status: MessageStatus", m.wamid,
                  m.send_attempted_at, c.last_inbound_at, ct.wa_id, ct.bsuid, ch.phone_number_id
           FROM messages m
           JOIN conversations c ON c.id = m.conversation_id
           JOIN contacts ct ON ct.id = c.contact_id
           JOIN channels ch ON ch.id = m.channel_id
           WHERE m.id = $1 AND m.direction = 'outbound'"#,
        id
    )
    .fetch_optional(db)
    .await
}

/// Marks a send attempt as started and in doubt (committed before the request leaves, so that
/// a crash or timeout afterwards is known to be "maybe sent").
pub async fn begin_send(db: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE messages SET send_attempted_at = now(), updated_at = now(),
               status = CASE WHEN status = 'queued' THEN 'sending' ELSE status END
           WHERE id = $1 AND status <> 'failed'"#,
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Clears the doubt of an attempt: it certainly reached WhatsApp (`reached`) or certainly did
/// not (the message goes back to `queued` if nothing of it was sent yet).
pub async fn settle_attempt(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    reached: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE messages SET send_attempted_at = NULL, updated_at = now(),
               status = CASE WHEN NOT $2 AND status = 'sending' AND wamid IS NULL THEN 'queued' ELSE status END
           WHERE id = $1"#,
        id,
        reached,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// What delivering a message needs, read in one round trip.
#[derive(Debug, Clone)]
pub struct ForDelivery {
    /// The message.
    pub message: MessageRow,
    /// Its channel.
    pub channel: Channel,
    /// The credentials of the channel's installation, if it has one.
    pub credentials: Option<Credentials>,
}

/// A row of [`for_delivery`]: a message, its channel and its installation's credentials.
struct DeliveryRow {
    id: Uuid,
    conversation_id: Uuid,
    channel_id: Uuid,
    direction: Direction,
    sender_id: String,
    kind: String,
    body: String,
    status: MessageStatus,
    error_code: Option<i32>,
    error_title: Option<String>,
    error_detail: Option<String>,
    sent_at: DateTime<Utc>,
    has_files: bool,
    phone_number_id: String,
    display_phone_number: Option<String>,
    verified_name: Option<String>,
    installation_id: Option<Uuid>,
    company_id: Option<i64>,
    pipedrive_channel_id: Option<String>,
    mode: ChannelMode,
    channel_created_at: DateTime<Utc>,
    channel_updated_at: DateTime<Utc>,
    credentials_id: Option<Uuid>,
    credentials_company_id: Option<i64>,
    api_domain: Option<String>,
    access_token_enc: Option<Vec<u8>>,
    refresh_token_enc: Option<Vec<u8>>,
    token_expires_at: Option<DateTime<Utc>>,
    installation_status: Option<InstallationStatus>,
}

impl From<DeliveryRow> for ForDelivery {
    fn from(r: DeliveryRow) -> Self {
        let credentials = match (
            r.credentials_id,
            r.credentials_company_id,
            r.api_domain,
            r.installation_status,
        ) {
            (Some(id), Some(company_id), Some(api_domain), Some(status)) => Some(Credentials {
                id,
                company_id,
                api_domain,
                access_token_enc: r.access_token_enc,
                refresh_token_enc: r.refresh_token_enc,
                token_expires_at: r.token_expires_at,
                status,
            }),
            _ => None,
        };
        let channel = Channel {
            id: r.channel_id,
            phone_number_id: r.phone_number_id,
            display_phone_number: r.display_phone_number,
            verified_name: r.verified_name,
            installation_id: r.installation_id,
            company_id: r.company_id,
            pipedrive_channel_id: r.pipedrive_channel_id,
            mode: r.mode,
            created_at: r.channel_created_at,
            updated_at: r.channel_updated_at,
        };
        let message = MessageRow {
            id: r.id,
            conversation_id: r.conversation_id,
            channel_id: r.channel_id,
            direction: r.direction,
            sender_id: r.sender_id,
            kind: r.kind,
            body: r.body,
            status: r.status,
            error_code: r.error_code,
            error_title: r.error_title,
            error_detail: r.error_detail,
            sent_at: r.sent_at,
            has_files: r.has_files,
        };
        ForDelivery {
            message,
            channel,
            credentials,
        }
    }
}

/// Messages by id with their channels and the credentials of each channel's installation:
/// what deliveries read, in one statement for a whole run of them (ids not found are left out).
pub async fn for_delivery(
    db: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<ForDelivery>, sqlx::Error> {
    // A single id has a statement of its own. PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten ids, which never looks cheaper than a plan for the
    // ids at hand), and planning that join cost several times running it: at 1,000 messages
    // a second, a sixth of the machine. The single form keeps one plan.
    let rows = if let [id] = ids {
        sqlx::query_as!(
            DeliveryRow,
            r#"SELECT m.id, m.conversation_id, m.channel_id, m.direction AS "direction: Direction",
                      m.sender_id, m.kind, m.body, m.status AS "status: MessageStatus", m.error_code,
                      m.error_title, m.error_detail, m.sent_at,
                      m.has_files,
                      ch.phone_number_id, ch.display_phone_number, ch.verified_name, ch.installation_id,
                      ch.company_id, ch.pipedrive_channel_id, ch.mode AS "mode: ChannelMode",
                      ch.created_at AS channel_created_at, ch.updated_at AS channel_updated_at,
                      i.id AS "credentials_id?", i.company_id AS "credentials_company_id?",
                      i.api_domain AS "api_domain?", i.access_token_enc, i.refresh_token_enc,
                      i.token_expires_at, i.status AS "installation_status?: InstallationStatus"
               FROM messages m
                    JOIN channels ch ON ch.id = m.channel_id
                    LEFT JOIN installations i ON i.id = ch.installation_id
               WHERE m.id = $1"#,
            id,
        )
        .fetch_all(db)
        .await?
    } else {
        sqlx::query_as!(
            DeliveryRow,
            // One index lookup per id, whatever the plan cache holds: with `m.id = ANY($1)`, a
            // plan made while `messages` was still small would scan the whole table ever after.
            // The ids pass through a subquery so that no plan knows how many there are: a plan
            // for the count at hand then looks no cheaper than the generic one, which is kept
            // (read-aheads of two or three ids were planned anew at every call, 0.5 ms each).
            r#"SELECT m.id AS "id!", m.conversation_id AS "conversation_id!", m.channel_id AS "channel_id!",
                      m.direction AS "direction!: Direction", m.sender_id AS "sender_id!",
                      m.kind AS "kind!", m.body, m.status AS "status!: MessageStatus", m.error_code,
                      m.error_title, m.error_detail, m.sent_at AS "sent_at!", m.has_files AS "has_files!",
                      ch.phone_number_id, ch.display_phone_number, ch.verified_name, ch.installation_id,
                      ch.company_id, ch.pipedrive_channel_id, ch.mode AS "mode: ChannelMode",
                      ch.created_at AS channel_created_at, ch.updated_at AS channel_updated_at,
                      i.id AS "credentials_id?", i.company_id AS "credentials_company_id?",
                      i.api_domain AS "api_domain?", i.access_token_enc, i.refresh_token_enc,
                      i.token_expires_at, i.status AS "installation_status?: InstallationStatus"
               FROM unnest((SELECT $1::uuid[])) AS wanted (id)
                    CROSS JOIN LATERAL (
                        SELECT msg.*
                        FROM messages msg WHERE msg.id = wanted.id LIMIT 1
                    ) m
                    JOIN channels ch ON ch.id = m.channel_id
                    LEFT JOIN installations i ON i.id = ch.installation_id"#,
            ids,
        )
        .fetch_all(db)
        .await?
    };
    Ok(rows.into_iter().map(ForDelivery::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_taken_whole_while_runs_last_and_never_when_busy() {
        let busy = HashSet::from(["b".to_string()]);
        let keys = [
            Some("a"),
            Some("b"),
            None,
            Some("a"),
            Some("c"),
            Some("d"),
            Some("c"),
            None,
        ];
        let mut runs = 3;
        let taken = take(keys.into_iter(), &busy, &mut runs);
        // a, the keyless job and c take the three runs; b is busy; d and the last keyless job
        // find none left, and c's second delivery follows its first.
        assert_eq!(taken, [true, false, true, true, true, false, true, false]);
        assert_eq!(runs, 0);

        let mut runs = 5;
        let taken = take([Some("a"), Some("a"), None].into_iter(), &busy, &mut runs);
        assert_eq!(taken, [true, true, true]);
        assert_eq!(runs, 3);
    }
}
