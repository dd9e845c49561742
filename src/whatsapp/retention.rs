//! How long the webhook inbox keeps what it has processed. Bodies are kept a week after they
//! arrive, to look into what Meta sent; then they go, or the inbox would grow by every webhook
//! for ever (at 1,000 webhooks a second, some 90 GB a day). The messages
//! themselves are in the history; parked and failed webhooks stay until they are replayed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::webhook_events;

/// How long a processed webhook body is kept after it arrived.
pub const KEEP: Duration = Duration::from_secs(7 * 86_400);

/// How often the inbox is purged (the first time at start-up).
const EVERY: Duration = Duration::from_secs(3600);

/// Webhooks looked at per statement: a short transaction each, so the purge never holds
/// many rows locked, and a first purge of a large inbox does not hold one transaction open.
const SCAN: i64 = 5_000;

/// Purges the inbox every [`EVERY`] until shutdown.
pub fn spawn(db: PgPool, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let cutoff = Utc::now() - KEEP;
            match purge(&db, cutoff, SCAN, &shutdown).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "processed webhooks past their retention deleted"),
                // Another purge an hour later picks up where this one failed.
                Err(error) => tracing::warn!(%error, "purging processed webhooks failed"),
            }
        }
    });
}

/// Deletes the processed webhooks received before `cutoff`, `scan` looked at per statement,
/// until done or shut down; how many were deleted.
pub async fn purge(
    db: &PgPool,
    cutoff: DateTime<Utc>,
    scan: i64,
    shutdown: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    let mut after = 0;
    while !shutdown.is_cancelled() {
        let step = webhook_events::purge_processed(db, after, cutoff, scan).await?;
        deleted += step.deleted;
        match step.next {
            Some(next) => after = next,
            None => break,
        }
    }
    metrics::counter!("webhook_events_purged_total").increment(deleted);
    Ok(deleted)
}
