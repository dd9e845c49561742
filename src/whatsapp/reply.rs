//! A message a salesperson wrote, in Pipedrive's inbox (postMessage) or in our chat panel, on
//! its way out: checked, stored and queued by [`outbound::create`], then sent at once in a task
//! of its own. A refusal WhatsApp gives right away comes back to the writer; anything slower or
//! transient is left to the queue and shows up later as a status.

use std::time::Duration;

use uuid::Uuid;

use super::outbound::{self, NewFile, OutboundError};
use super::send::Sender;
use super::templates;
use crate::http::error::ApiError;
use crate::queue::{self, JobError};
use crate::state::AppState;
use crate::store::channels::Channel;
use crate::store::conversations::ConversationRow;
use crate::store::templates::Template;

/// Several files of up to 100 MB (WhatsApp's document limit) fit in one request.
pub const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// How long the writer waits for WhatsApp's first answer before leaving the send to the queue.
const INLINE_WAIT: Duration = Duration::from_secs(8);

/// Why a message was not accepted; the text is for the writer.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// Our checks (window, template, files) or WhatsApp itself refused it.
    #[error("{0}")]
    Refused(String),
    /// Storing failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<ReplyError> for ApiError {
    fn from(error: ReplyError) -> Self {
        match error {
            ReplyError::Refused(reason) => ApiError::BadRequest(reason),
            ReplyError::Database(db) => ApiError::from(db),
        }
    }
}

/// The templates a plain text may turn out to be (the inbox and our panel insert a template's
/// text with its placeholders filled): the approved ones, unless files go along, which a
/// template cannot carry.
pub async fn recognisable_templates(
    state: &AppState,
    with_files: bool,
) -> Result<Vec<Template>, sqlx::Error> {
    if with_files {
        return Ok(Vec::new());
    }
    templates::approved(
        &state.db,
        &state.graph,
        &state.config.whatsapp.business_account_id,
    )
    .await
}

/// Stores, queues and sends `text` with `files` to the customer of `conversation`; `templates`
/// are what the text may be recognised as. Returns our message id once it is stored.
#[tracing::instrument(skip_all, fields(conversation_id = %conversation.id))]
pub async fn send(
    state: &AppState,
    channel: &Channel,
    conversation: &ConversationRow,
    text: &str,
    files: Vec<NewFile>,
    templates: &[Template],
) -> Result<Uuid, ReplyError> {
    let queued = outbound::create(&state.db, channel, conversation, text, files, templates)
        .await
        .map_err(|e| match e {
            OutboundError::Refused(refusal) => ReplyError::Refused(refusal.to_string()),
            OutboundError::Database(db) => ReplyError::Database(db),
        })?;
    let message_id = queued.message_id;
    tracing::info!(%message_id, "message queued");

    // The send runs in its own task so a slow upload outlives neither the request's patience
    // nor a dropped connection: it settles its job whatever happens here.
    let sender = Sender {
        db: state.db.clone(),
        graph: state.graph.clone(),
    };
    let (db, retry) = (state.db.clone(), state.retry);
    let attempt = tokio::spawn(async move { queue::run_inline(&db, queued.job_id, &sender, retry).await });
    match tokio::time::timeout(INLINE_WAIT, attempt).await {
        Ok(Ok(Ok(Some(Err(JobError::Permanent(reason)))))) => Err(ReplyError::Refused(format!(
            "WhatsApp refused the message: {reason}"
        ))),
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, %message_id, "immediate send could not start; the queue will send it");
            Ok(message_id)
        }
        _ => Ok(message_id),
    }
}
