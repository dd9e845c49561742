//! Turns one stored webhook notification into contacts, conversations, messages, attachments
//! and status changes, and queues what must reach Pipedrive. Runs inside the caller's
//! transaction, as part of a [`Batch`]; every step is idempotent, so a notification processed
//! twice changes nothing.
//!
//! A plain message (no media, not a reply, reaction, edit or deletion) is only deferred to the
//! batch, once its customer and conversation are known or created; anything else first stores
//! what was deferred, so every lookup of a message sees the messages before it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::batch::{Batch, KnownChannel};
use super::payload::{self, Change, MessageHead, MessagesValue, Notification, Status};
use super::render::{self, Quotes};
use super::send;
use crate::media;
use crate::pipedrive::delivery;
use crate::queue::{self, NewJob};
use crate::store::contacts::Known;
use crate::store::messages::{self, Direction, Failure, MessageStatus, Received};
use crate::store::{attachments, contacts, conversations, templates};

/// Job kind retrying a status whose message is not known yet (the status overtook the send).
pub const APPLY_STATUS_KIND: &str = "apply_status";

/// Why a notification could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The stored body is not a notification (cannot happen for bodies checked at the edge).
    #[error("malformed notification: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The database failed; the whole batch is retried.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What processing one notification did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Phone number ids we do not serve: the event is parked, nothing is delivered.
    pub unknown_numbers: Vec<String>,
    /// Fields and items that were not for us, for the note.
    pub skipped: Vec<String>,
}

impl Outcome {
    /// `processed`, or `parked` when part of it was for a number we do not serve.
    pub fn state(&self) -> &'static str {
        if self.unknown_numbers.is_empty() {
            "processed"
        } else {
            "parked"
        }
    }

    /// A short note for the inbox row.
    pub fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.unknown_numbers.is_empty() {
            parts.push(format!(
                "unknown phone_number_id {}",
                self.unknown_numbers.join(",")
            ));
        }
        parts.extend(self.skipped.iter().cloned());
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Reads a stored notification body.
pub fn parse(body: &[u8]) -> Result<Notification, IngestError> {
    Ok(serde_json::from_slice(body)?)
}

/// Processes a notification as part of `batch`.
pub async fn process(
    conn: &mut PgConnection,
    notification: &Notification,
    batch: &mut Batch,
) -> Result<Outcome, IngestError> {
    let mut outcome = Outcome::default();
    if notification.object != "whatsapp_business_account" {
        outcome
            .skipped
            .push(format!("object {:?} ignored", notification.object));
        return Ok(outcome);
    }
    for change in notification.entry.iter().flat_map(|e| &e.changes) {
        match change.field.as_str() {
            "messages" | "smb_message_echoes" => process_messages(conn, change, batch, &mut outcome).await?,
            "message_template_status_update"
            | "message_template_quality_update"
            | "message_template_components_update"
            | "template_category_update" => templates::mark_stale(&mut *conn).await?,
            field => {
                metrics::counter!("webhook_fields_ignored_total", "field" => field.to_string()).increment(1);
                outcome.skipped.push(format!("field {field} ignored"));
            }
        }
    }
    Ok(outcome)
}

async fn process_messages(
    conn: &mut PgConnection,
    change: &Change,
    batch: &mut Batch,
    outcome: &mut Outcome,
) -> Result<(), IngestError> {
    let mut value = change.value.clone();
    payload::strip_nul(&mut value);
    let value: MessagesValue = serde_json::from_value(value)?;
    let phone_number_id = value
        .metadata
        .as_ref()
        .map(|m| m.phone_number_id.as_str())
        .unwrap_or("");
    let Some(channel) = batch.channel(conn, phone_number_id).await? else {
        metrics::counter!("webhook_unknown_number_total").increment(1);
        tracing::warn!(
            phone_number_id,
            "webhook for a phone number this deployment does not serve; parked"
        );
        outcome.unknown_numbers.push(phone_number_id.to_string());
        return Ok(());
    };
    let profiles: HashMap<&str, &str> = value
        .contacts
        .iter()
        .filter_map(|c| {
            let name = c.profile.as_ref()?.name.as_deref()?;
            Some(
                [c.wa_id.as_deref(), c.user_id.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(move |k| (k, name)),
            )
        })
        .flatten()
        .collect();
    for item in &value.messages {
        store_message(conn, batch, &channel, item, &profiles, Direction::Inbound).await?;
    }
    for item in &value.message_echoes {
        store_message(conn, batch, &channel, item, &profiles, Direction::Outbound).await?;
    }
    if !value.statuses.is_empty() {
        batch.flush(conn).await?;
    }
    for item in &value.statuses {
        match serde_json::from_value::<Status>(item.clone()) {
            Ok(status) => {
                apply_status(conn, channel.id, &status, true).await?;
            }
            Err(error) => outcome.skipped.push(format!("unreadable status: {error}")),
        }
    }
    for error in &value.errors {
        tracing::warn!(error = %error, phone_number_id, "WhatsApp reported an error");
        metrics::counter!("webhook_errors_total").increment(1);
    }
    Ok(())
}

/// Finds the customer `who` (refreshing what they are called) or creates them, with their
/// conversation on `channel_id` (created with its first activity at `at`), and remembers them
/// for the rest of the batch; returns contact and conversation.
async fn customer_of(
    conn: &mut PgConnection,
    batch: &mut Batch,
    channel_id: Uuid,
    who: &contacts::Identity<'_>,
    at: DateTime<Utc>,
) -> Result<(Uuid, Uuid), sqlx::Error> {
    // Someone the batch's prefetch did not find is stored with the batch's other new customers,
    // where looking them up again and creating contact and conversation one by one took five
    // statements each.
    if batch.unknown(channel_id, who) {
        return Ok(batch.create(channel_id, who, at));
    }
    let (contact_id, conversation_id) = match contacts::find_refreshed(conn, who, Some(channel_id)).await? {
        Some(Known {
            contact_id,
            conversation_id: Some(conversation_id),
        }) => (contact_id, conversation_id),
        known => {
            let contact_id = match known {
                Some(known) => known.contact_id,
                None => contacts::upsert(conn, who).await?,
            };
            let conversation_id = conversations::upsert(conn, channel_id, contact_id, at).await?;
            (contact_id, conversation_id)
        }
    };
    batch.remember(channel_id, who, contact_id, conversation_id);
    Ok((contact_id, conversation_id))
}

/// Stores one message (inbound, or an echo of one the business sent from its phone) and queues
/// its media and its delivery; a plain message is only deferred to the batch.
async fn store_message(
    conn: &mut PgConnection,
    batch: &mut Batch,
    channel: &KnownChannel,
    item: &Value,
    profiles: &HashMap<&str, &str>,
    direction: Direction,
) -> Result<(), IngestError> {
    let Ok(head) = serde_json::from_value::<MessageHead>(item.clone()) else {
        tracing::warn!("message item without an id skipped; its raw event is kept");
        return Ok(());
    };
    let (wa_id, bsuid) = match direction {
        Direction::Inbound => (head.from.as_deref(), head.from_user_id.as_deref()),
        Direction::Outbound => (head.to.as_deref(), None),
    };
    if wa_id.is_none() && bsuid.is_none() {
        tracing::warn!(wamid = head.id, "message without a sender or recipient skipped");
        return Ok(());
    }
    let profile_name = wa_id.or(bsuid).and_then(|k| profiles.get(k).copied());
    let who = contacts::Identity {
        wa_id,
        bsuid,
        profile_name,
    };
    let received = |contact_id: Uuid, conversation_id: Uuid, body: String| {
        let id = Uuid::now_v7();
        Received {
            id,
            conversation_id,
            channel_id: channel.id,
            direction,
            wamid: head.id.clone(),
            sender_id: match direction {
                Direction::Inbound => contact_id.to_string(),
                Direction::Outbound => channel.phone_number_id.clone(),
            },
            kind: head.kind.clone(),
            body,
            raw: item.clone(),
            reply_to_wamid: render::reply_wamid(item).map(str::to_string),
            sent_at: head.timestamp,
            from_customer: direction == Direction::Inbound && head.kind != "system",
            delivery: delivery::first(id, conversation_id),
        }
    };

    let target_wamid = render::target_wamid(item);
    // A plain message (no reply, no target, no media) needs nothing stored before it: it is
    // deferred, once its customer and conversation are known.
    let plain = (render::reply_wamid(item).is_none() && target_wamid.is_none())
        .then(|| render::render(item, Quotes::default()))
        .filter(|rendered| rendered.media.is_empty());
    let known = plain
        .as_ref()
        .and_then(|_| batch.customer(channel.id, &who))
        .map(|customer| (customer.contact_id, customer.conversation_id));
    let (contact_id, conversation_id) = match known {
        Some(ids) => ids,
        None => {
            // Replies, edits, reactions and media look messages up, so what was deferred goes
            // first.
            if plain.is_none() {
                batch.flush(conn).await?;
            }
            customer_of(conn, batch, channel.id, &who, head.timestamp).await?
        }
    };
    if let Some(rendered) = plain {
        batch.defer(received(contact_id, conversation_id, rendered.body));
        return Ok(());
    }

    let reply_to = quoted_body(conn, channel.id, render::reply_wamid(item)).await?;
    let target = match target_wamid {
        Some(wamid) => messages::find_by_wamid(conn, channel.id, wamid).await?,
        None => None,
    };
    let rendered = render::render(
        item,
        Quotes {
            reply_to: reply_to.as_deref(),
            target: target.as_ref().map(|t| t.body.as_str()),
        },
    );
    let message = received(contact_id, conversation_id, rendered.body);
    let message_id = message.id;
    batch.defer(message);
    if !batch.flush(conn).await?.contains(&message_id) {
        return Ok(());
    }
    for (position, media) in rendered.media.iter().enumerate() {
        let attachment = attachments::insert_pending(
            conn,
            message_id,
            position as i32,
            &media.media_id,
            &media.mime_type,
            media.filename.as_deref(),
        )
        .await?;
        media::download::enqueue(conn, attachment).await?;
    }

    // An edit or deletion also changes the message it is about, which Pipedrive then updates
    // in place (same id).
    if let Some(original) = target.filter(|_| matches!(head.kind.as_str(), "edit" | "revoke")) {
        let marked = if head.kind == "edit" {
            let edited = render::render(&item["edit"]["message"], Quotes::default());
            format!("{}\n(edited)", edited.body)
        } else {
            format!("🗑️ Deleted by the customer: {}", render::quote(&original.body))
        };
        messages::set_body(conn, original.id, &marked).await?;
        delivery::enqueue(
            conn,
            original.id,
            original.conversation_id,
            &format!("{}:{}", head.kind, head.id),
        )
        .await?;
    }
    Ok(())
}

async fn quoted_body(
    conn: &mut PgConnection,
    channel_id: Uuid,
    wamid: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    match wamid {
        Some(wamid) => Ok(messages::find_by_wamid(conn, channel_id, wamid)
            .await?
            .map(|m| m.body)),
        None => Ok(None),
    }
}

/// What became of a status.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The message moved forward; its new status is queued for Pipedrive.
    Advanced,
    /// Old news (duplicate, out of order, or after a terminal state).
    Unchanged,
    /// No such message (yet).
    UnknownMessage,
}

/// Applies a status of one of our messages. When the message is not known yet and `queue_if_unknown`
/// is set, the status is queued to be applied again shortly (a status can overtake the answer
/// of the send call that tells us the wamid).
pub async fn apply_status(
    conn: &mut PgConnection,
    channel_id: Uuid,
    status: &Status,
    queue_if_unknown: bool,
) -> Result<StatusOutcome, sqlx::Error> {
    let Some(new_status) = MessageStatus::from_webhook(&status.status) else {
        tracing::warn!(status = status.status, "unknown status value ignored");
        return Ok(StatusOutcome::Unchanged);
    };
    let mut message = messages::find_by_any_wamid(conn, channel_id, &status.id).await?;
    if message.is_none()
        && let Some((id, file)) = status
            .biz_opaque_callback_data
            .as_deref()
            .and_then(send::parse_tracker)
    {
        message = messages::find_on_channel(conn, channel_id, id).await?;
        // The send got no answer, but WhatsApp did take the part: remember its id so the part
        // is not sent again.
        if message.is_some() {
            match file {
                Some(file) => attachments::set_wamid_if_missing(&mut *conn, file, &status.id).await?,
                None => messages::set_wamid_if_missing(conn, id, &status.id).await?,
            }
        }
    }
    let Some(message) = message else {
        if queue_if_unknown {
            let payload = serde_json::json!({"channel_id": channel_id, "status": status_json(status)});
            queue::enqueue(conn, NewJob::new(APPLY_STATUS_KIND, &payload)).await?;
        }
        return Ok(StatusOutcome::UnknownMessage);
    };
    let error = status.errors.first();
    let detail = error
        .and_then(|e| e.error_data.as_ref())
        .and_then(|d| d.details.as_deref());
    let failure = Failure {
        code: error.and_then(|e| i32::try_from(e.code).ok()),
        title: error.and_then(|e| e.title.as_deref().or(e.message.as_deref())),
        detail,
    };
    match messages::advance_status(conn, message.id, new_status, &failure).await? {
        Some(conversation_id) => {
            metrics::counter!("message_statuses_total", "status" => new_status.for_pipedrive()).increment(1);
            delivery::enqueue(conn, message.id, conversation_id, new_status.for_pipedrive()).await?;
            Ok(StatusOutcome::Advanced)
        }
        None => Ok(StatusOutcome::Unchanged),
    }
}

/// The fields of a status the retry job needs, in webhook shape.
fn status_json(status: &Status) -> Value {
    serde_json::json!({
        "id": status.id,
        "status": status.status,
        "timestamp": status.timestamp.timestamp().to_string(),
        "biz_opaque_callback_data": status.biz_opaque_callback_data,
        "errors": status.errors.iter().map(|e| serde_json::json!({
            "code": e.code,
            "title": e.title,
            "message": e.message,
            "error_data": {"details": e.error_data.as_ref().and_then(|d| d.details.clone())},
        })).collect::<Vec<_>>(),
    })
}

/// Attempts after which a status for an unknown message is dropped: by then it is not one of
/// ours (another tool shares the number) rather than early.
const STATUS_PATIENCE: i32 = 5;

/// Re-applies statuses that arrived before their message was known.
pub struct ApplyStatus {
    /// Database pool.
    pub db: sqlx::PgPool,
}

impl queue::Handler for ApplyStatus {
    fn run<'a>(
        &'a self,
        job: &'a queue::Job,
    ) -> futures_util::future::BoxFuture<'a, Result<(), queue::JobError>> {
        Box::pin(async move {
            #[derive(serde::Deserialize)]
            struct Input {
                channel_id: Uuid,
                status: Status,
            }
            let input: Input = job.input()?;
            let mut tx = self.db.begin().await?;
            let outcome = apply_status(&mut tx, input.channel_id, &input.status, false).await?;
            tx.commit().await?;
            match outcome {
                StatusOutcome::UnknownMessage if job.attempts >= STATUS_PATIENCE => {
                    tracing::info!(
                        wamid = input.status.id,
                        "status for a message this bridge did not send; dropped"
                    );
                    Ok(())
                }
                StatusOutcome::UnknownMessage => {
                    Err(queue::JobError::retry("message of this status not known yet"))
                }
                _ => Ok(()),
            }
        })
    }
}
