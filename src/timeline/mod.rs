//! The CRM timeline sink: conversations written into Pipedrive as notes on the customer's
//! person (and the person's one open deal or lead), one note per conversation per day, rewritten
//! in place as the conversation goes on. It keeps WhatsApp in Pipedrive now that the Channels
//! API (the Messaging inbox) is retired.
//!
//! Days are UTC days: the company's own time zone is not known to us.
//!
//! Every change of a message (new, status, edit, file) marks its conversation-day and queues a
//! `timeline_note` job for it; changes within one debounce interval collapse into one job, and
//! a job rebuilds the day's notes from our store, so it is idempotent and a replay (the
//! inbox-to-timeline switch, `backfill`) never duplicates anything. Jobs of one customer run one
//! after another, so a person is never created twice for them.

pub mod backfill;
pub mod budget;
mod crm;
pub mod note;
pub mod person;
pub mod writer;

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::pipedrive::PipedriveError;
use crate::pipedrive::delivery::{timeline_tag, unregistered_tag};
use crate::queue::{self, Handler, Job, JobError, NewJob};
use crate::store::{channels, timeline as store};
pub use writer::{Outcome, Writer, Written};

/// Job kind.
pub const KIND: &str = "timeline_note";

/// How long changes of a conversation-day are collected before its notes are written.
pub const DEBOUNCE: Duration = Duration::from_secs(30);

/// Why a timeline write failed.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// Pipedrive refused or failed.
    #[error(transparent)]
    Pipedrive(#[from] PipedriveError),
    /// Our database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The channel belongs to no installation yet.
    #[error("the channel {0} is not installed in Pipedrive yet")]
    Unregistered(String),
    /// The person the notes were written on was deleted or merged in Pipedrive.
    #[error("the Pipedrive person of this conversation no longer exists; it is looked up again")]
    PersonGone,
    /// Pipedrive answered in a shape we do not understand.
    #[error("{0}")]
    Unexpected(String),
}

impl From<TimelineError> for JobError {
    fn from(error: TimelineError) -> Self {
        match error {
            TimelineError::Pipedrive(error) => error.into(),
            TimelineError::Database(error) => error.into(),
            TimelineError::Unregistered(ref phone_number_id) => JobError::Park {
                on: unregistered_tag(phone_number_id),
                reason: error.to_string(),
            },
            TimelineError::PersonGone | TimelineError::Unexpected(_) => JobError::retry(error),
        }
    }
}

/// The job's input: one conversation-day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// The conversation.
    pub conversation_id: Uuid,
    /// The UTC day.
    pub day: NaiveDate,
    /// A replay of history (yields to live conversations when the budget runs low).
    #[serde(default)]
    pub backfill: bool,
}

/// Timeline writes of one customer run one after another.
pub fn ordering_key(contact_id: Uuid) -> String {
    format!("timeline:contact:{contact_id}")
}

/// Records a change of a message sent at `sent_at` in `conversation_id` and queues the write of
/// its conversation-day, collapsing changes that fall into the same `debounce` interval. False
/// when the conversation's channel belongs to no company yet.
pub async fn enqueue_change(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    sent_at: DateTime<Utc>,
    debounce: Duration,
) -> Result<bool, sqlx::Error> {
    let day = budget::day_of(sent_at);
    let Some(contact_id) = store::touch_day(conn, conversation_id, day).await? else {
        return Ok(false);
    };
    let interval = debounce.as_millis().max(1) as i64;
    let slot = Utc::now().timestamp_millis() / interval;
    let run_at = DateTime::from_timestamp_millis((slot + 1) * interval).unwrap_or_else(Utc::now);
    let task = Task {
        conversation_id,
        day,
        backfill: false,
    };
    queue::enqueue(
        conn,
        NewJob::new(KIND, &task)
            .ordered_by(ordering_key(contact_id))
            .dedup(format!("timeline:{conversation_id}:{day}:{slot}"))
            .run_at(run_at),
    )
    .await?;
    Ok(true)
}

/// Re-queues deliveries parked for the timeline (by earlier versions, or while the timeline
/// could not take them): they run again and hand their changes to the timeline, in order.
pub async fn resume_parked(db: &PgPool) -> Result<u64, sqlx::Error> {
    let mut resumed = 0;
    for channel in channels::list(db).await? {
        resumed += queue::unpark(db, &timeline_tag(channel.id)).await?;
    }
    Ok(resumed)
}

/// Turns a write's outcome into the job's: a paused budget waits for the next day, a write that
/// a change overtook runs again after the debounce interval.
pub fn settle(result: Result<Outcome, TimelineError>, debounce: Duration) -> Result<(), JobError> {
    match result? {
        Outcome {
            written: Written::Paused(until),
            ..
        } => Err(JobError::Defer {
            reason: "the company's daily Pipedrive API budget is nearly spent".into(),
            after: (until - Utc::now()).to_std().unwrap_or(Duration::from_secs(60)),
        }),
        Outcome { overtaken: true, .. } => Err(JobError::Defer {
            reason: "the conversation changed while its notes were written".into(),
            after: debounce,
        }),
        Outcome { .. } => Ok(()),
    }
}

/// Writes conversation-days into Pipedrive (`timeline_note` jobs).
pub struct WriteNotes {
    /// The writer.
    pub writer: Writer,
    /// How long changes are collected before a write.
    pub debounce: Duration,
}

impl Handler for WriteNotes {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let task: Task = job.input()?;
            let result = self
                .writer
                .write_day(task.conversation_id, task.day, task.backfill)
                .await;
            settle(result, self.debounce)
        })
    }
}
