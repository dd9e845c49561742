//! Delivery of messages and their status changes to Pipedrive, one durable job per change, in
//! order per conversation: to the Messaging inbox (`POST /api/v1/channels/messages/receive`),
//! where re-posting a message id updates it, so a status change is simply the message delivered
//! again with its new status; and/or to the CRM timeline, which rewrites the conversation-day's
//! note. [`sink::route`] decides which.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::BoxFuture;
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::sink;
use super::wire::{self, Links};
use super::{PipedriveClient, PipedriveError};
use crate::config::{PublicUrl, Sink};
use crate::crypto::Keys;
use crate::queue::{self, Handler, Job, JobError, NewJob, ReadAhead};
use crate::store::attachments::{self, Attachment, AttachmentStatus};
use crate::store::channels::{self, Channel, ChannelMode};
use crate::store::installations::Credentials;
use crate::store::messages::{self, MessageStatus};
use crate::timeline;

/// Job kind.
pub const KIND: &str = "deliver_message";

/// Pipedrive's endpoint for incoming messages and status updates.
const RECEIVE_PATH: &str = "/api/v1/channels/messages/receive";

/// How long a delivery waits between looks at media still downloading.
const MEDIA_WAIT: Duration = Duration::from_secs(1);

/// Queues delivery of the current state of a message, after everything queued earlier for its
/// conversation. `change` names what changed (`new`, a status, `edit:<wamid>`, …): one change
/// is delivered once however often it is reported.
pub async fn enqueue(
    conn: &mut PgConnection,
    message_id: Uuid,
    conversation_id: Uuid,
    change: &str,
) -> Result<(), sqlx::Error> {
    let job = job(message_id, conversation_id, change).dedup(format!("deliver:{message_id}:{change}"));
    queue::enqueue(conn, job).await?;
    Ok(())
}

/// The delivery of a message just stored, for callers that insert it together with the message
/// (`messages::insert_received` queues it only when the message row is new). It needs no dedup
/// key: the message's uniqueness (channel, wamid) already makes it the only one, and a key is
/// an index entry written again on every claim and settle of the job.
pub fn first(message_id: Uuid, conversation_id: Uuid) -> NewJob {
    job(message_id, conversation_id, "new")
}

fn job(message_id: Uuid, conversation_id: Uuid, change: &str) -> NewJob {
    NewJob::new(KIND, &json!({"message_id": message_id, "change": change}))
        .ordered_by(format!("conversation:{conversation_id}"))
}

/// True when `change` is a status the message has since moved past. Every status change queues
/// its own delivery, and each delivery posts the message as it is now, so the later one already
/// carries the news: posting this one too would show Pipedrive the same status twice.
fn overtaken(change: &str, current: MessageStatus) -> bool {
    matches!(change, "sent" | "delivered" | "read" | "failed") && change != current.for_pipedrive()
}

/// The tag deliveries waiting for a channel's CRM timeline park on; they are replayed into it
/// (at start-up, and when the channel switches to the timeline).
pub fn timeline_tag(channel_id: Uuid) -> String {
    format!("timeline:{channel_id}")
}

/// The tag deliveries park on while their channel is not registered in Pipedrive yet.
pub fn unregistered_tag(phone_number_id: &str) -> String {
    format!("channel:{phone_number_id}:unregistered")
}

/// Delivers messages to Pipedrive: to the Messaging inbox, the CRM timeline, or both, as
/// [`sink::route`] decides.
pub struct Deliver {
    /// Database pool.
    pub db: PgPool,
    /// Pipedrive's API.
    pub pipedrive: PipedriveClient,
    /// Signs attachment links.
    pub keys: Arc<Keys>,
    /// Base URL of attachment links.
    pub public_url: PublicUrl,
    /// `PIPEDRIVE_SINK`.
    pub sink: Sink,
    /// How long changes of a timeline note are collected before it is written.
    pub debounce: Duration,
}

/// A delivery job's payload.
#[derive(Deserialize)]
struct Input {
    message_id: Uuid,
    #[serde(default)]
    change: Option<String>,
}

impl Handler for Deliver {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        self.run_read_ahead(job, None)
    }

    /// The messages of a run of deliveries, with their channels and tokens, in one statement.
    /// A change that lands after the read queues a delivery of its own behind this run, which
    /// posts the newer state. A token refreshed meanwhile is picked up by the client, at worst
    /// after one refused call.
    fn read_ahead<'a>(&'a self, jobs: &'a [&'a Job]) -> BoxFuture<'a, HashMap<i64, ReadAhead>> {
        Box::pin(async move {
            let wanted: Vec<(i64, Uuid)> = jobs
                .iter()
                .filter_map(|job| Some((job.id, job.input::<Input>().ok()?.message_id)))
                .collect();
            let ids: Vec<Uuid> = wanted.iter().map(|&(_, message_id)| message_id).collect();
            let read = match messages::for_delivery(&self.db, &ids).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(%error, "reading a run of deliveries ahead failed; each reads its own");
                    return HashMap::new();
                }
            };
            let by_message: HashMap<Uuid, messages::ForDelivery> =
                read.into_iter().map(|r| (r.message.id, r)).collect();
            wanted
                .into_iter()
                .filter_map(|(job, message_id)| {
                    let read = by_message.get(&message_id)?.clone();
                    Some((job, Box::new(read) as ReadAhead))
                })
                .collect()
        })
    }

    fn run_read_ahead<'a>(
        &'a self,
        job: &'a Job,
        ahead: Option<ReadAhead>,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let Input { message_id, change } = job.input()?;
            let read = match ahead.and_then(|ahead| ahead.downcast::<messages::ForDelivery>().ok()) {
                Some(read) => Some(*read),
                None => messages::for_delivery(&self.db, &[message_id]).await?.pop(),
            };
            let Some(messages::ForDelivery {
                message: row,
                channel,
                credentials,
            }) = read
            else {
                return Ok(());
            };
            if change.as_deref().is_some_and(|c| overtaken(c, row.status)) {
                tracing::debug!(%message_id, "status overtaken; the later status's delivery carries it");
                return Ok(());
            }
            let route = sink::route(self.sink, channel.mode);
            if route.is_nowhere() {
                tracing::debug!(%message_id, "channel disabled; not delivered");
                return Ok(());
            }
            let Some(installation_id) = channel.installation_id else {
                return Err(JobError::Park {
                    on: unregistered_tag(&channel.phone_number_id),
                    reason: "the channel is not registered in Pipedrive yet (install the app)".into(),
                });
            };
            let files = attachments::of_rows(&self.db, std::slice::from_ref(&row)).await?;
            if files.iter().any(|a| a.status == AttachmentStatus::Pending) {
                return Err(JobError::Defer {
                    reason: "waiting for the message's media to download".into(),
                    after: MEDIA_WAIT,
                });
            }
            // The timeline first, so that a failing inbox never holds it back (`both`).
            if route.timeline {
                self.to_timeline(&row).await?;
            }
            if !route.inbox {
                return Ok(());
            }
            match self
                .to_inbox(installation_id, credentials, &channel, &row, &files, job)
                .await
            {
                Ok(()) => Ok(()),
                Err(PipedriveError::Gone { status }) if route.switch_when_retired => {
                    // Pipedrive retired the Channels API (2026-02-01): the channel moves to the
                    // CRM timeline, with this change and everything parked for it.
                    tracing::warn!(
                        status,
                        phone_number_id = channel.phone_number_id,
                        "Channels API retired; channel switched to timeline mode"
                    );
                    channels::set_mode(&self.db, channel.id, ChannelMode::Timeline).await?;
                    metrics::counter!("deliveries_total", "outcome" => "retired").increment(1);
                    if !route.timeline {
                        self.to_timeline(&row).await?;
                    }
                    queue::unpark(&self.db, &timeline_tag(channel.id)).await?;
                    Ok(())
                }
                Err(PipedriveError::Gone { status }) => Err(JobError::retry(format!(
                    "Pipedrive answered {status}: the Channels API is retired (PIPEDRIVE_SINK=inbox keeps trying)"
                ))),
                Err(error) => Err(error.into()),
            }
        })
    }
}

impl Deliver {
    /// Hands the change to the CRM timeline: its conversation-day is written shortly.
    async fn to_timeline(&self, row: &messages::MessageRow) -> Result<(), sqlx::Error> {
        let mut tx = self.db.begin().await?;
        timeline::enqueue_change(&mut tx, row.conversation_id, row.sent_at, self.debounce).await?;
        tx.commit().await?;
        metrics::counter!("deliveries_total", "outcome" => "timeline").increment(1);
        Ok(())
    }

    /// Posts the message's current state to the Messaging inbox.
    async fn to_inbox(
        &self,
        installation_id: Uuid,
        credentials: Option<Credentials>,
        channel: &Channel,
        row: &messages::MessageRow,
        files: &[Attachment],
        job: &Job,
    ) -> Result<(), PipedriveError> {
        let links = Links {
            keys: &self.keys,
            public_url: &self.public_url,
        };
        let message = wire::message(row.clone(), &files.iter().collect::<Vec<_>>(), links);
        let mut body = json!({
            "id": message.id,
            "channel_id": channel.phone_number_id,
            "sender_id": message.sender_id,
            "conversation_id": row.conversation_id.to_string(),
            "message": message.message,
            "status": message.status,
            "created_at": message.created_at,
            "conversation_link": "",
            "attachments": message.attachments,
        });
        if let Some(reply_by) = &message.reply_by {
            body["reply_by"] = json!(reply_by);
        }
        match self
            .pipedrive
            .request_as(
                installation_id,
                credentials,
                Method::POST,
                RECEIVE_PATH,
                Some(&body),
            )
            .await
        {
            Ok(_) => {
                let waited = (Utc::now() - job.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("delivery_latency_seconds").record(waited);
                metrics::counter!("deliveries_total", "outcome" => "delivered").increment(1);
                Ok(())
            }
            Err(error) => {
                let status = match &error {
                    PipedriveError::Rejected { status, .. } | PipedriveError::Server { status, .. } => {
                        status.to_string()
                    }
                    PipedriveError::Gone { status } => status.to_string(),
                    PipedriveError::RateLimited { .. } => "429".into(),
                    _ => "none".into(),
                };
                metrics::counter!("delivery_failures_total", "status" => status).increment(1);
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_statuses_the_message_moved_past_are_overtaken() {
        assert!(overtaken("sent", MessageStatus::Read));
        assert!(overtaken("delivered", MessageStatus::Failed));
        assert!(!overtaken("sent", MessageStatus::Sending));
        assert!(!overtaken("read", MessageStatus::Read));
        assert!(!overtaken("new", MessageStatus::Read));
        assert!(!overtaken("edit:wamid.X", MessageStatus::Delivered));
    }
}
