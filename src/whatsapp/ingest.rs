//! The ingest loop: takes committed webhook bodies from the inbox in arrival order and
//! processes them in batches, one transaction per batch and a savepoint per event, so one bad
//! event cannot hold back the others and nothing is half-applied.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::inbound::{self, IngestError};
use crate::store::{self, webhook_events};

/// Events processed per transaction.
const BATCH: i64 = 200;

/// Longest sleep between two looks at the inbox when nobody wakes the loop (events another
/// replica stored and could not process).
const POLL: Duration = Duration::from_secs(1);

/// Starts the loop; `wake` is notified by the webhook handler after each commit.
pub fn spawn(db: PgPool, wake: Arc<Notify>, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        loop {
            let pause = match process_batch(&db).await {
                Ok(0) => POLL,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    tracing::warn!(%error, "processing webhooks failed; retrying");
                    POLL
                }
            };
            if pause.is_zero() && !shutdown.is_cancelled() {
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

/// Processes up to one batch; returns how many events it took.
pub async fn process_batch(db: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = db.begin().await?;
    webhook_events::lock_inbox(&mut tx).await?;
    let events = webhook_events::lock_pending(&mut tx, BATCH).await?;
    for event in &events {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match inbound::process(&mut savepoint, &event.body).await {
            Ok(outcome) => {
                savepoint.commit().await?;
                webhook_events::finish(&mut tx, event.id, outcome.state(), outcome.note().as_deref()).await?;
                metrics::counter!("webhook_events_processed_total", "state" => outcome.state()).increment(1);
            }
            Err(IngestError::Database(error)) if retry_whole_batch(&error) => return Err(error),
            Err(error) => {
                savepoint.rollback().await?;
                tracing::error!(event = event.id, %error, "webhook event could not be processed; kept as failed");
                webhook_events::finish(&mut tx, event.id, "failed", Some(&error.to_string())).await?;
                metrics::counter!("webhook_events_processed_total", "state" => "failed").increment(1);
            }
        }
        let lag = (Utc::now() - event.received_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("webhook_processing_lag_seconds").record(lag);
    }
    tx.commit().await?;
    Ok(events.len())
}

/// Outages and concurrency conflicts (deadlock, serialization) pass; the batch runs again.
fn retry_whole_batch(error: &sqlx::Error) -> bool {
    store::is_unavailable(error)
        || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("40")))
}
