//! How long finished jobs are kept. Only jobs with a dedup key are kept once done (the others
//! are deleted when they succeed): each holds back a second job with its key for a week, which
//! covers Meta's retries of a webhook, then goes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::purge::{self, PACE, Pace};
use crate::store::jobs;

/// How long a done job is kept after it finished.
pub const KEEP: Duration = Duration::from_secs(7 * 86_400);

/// How often finished jobs are purged (the first time at start-up).
const EVERY: Duration = Duration::from_secs(3600);

/// Purges finished jobs every [`EVERY`] until shutdown.
pub fn spawn(db: PgPool, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            match purge(&db, Utc::now() - KEEP, PACE, &shutdown).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "finished jobs past their retention deleted"),
                // Another purge an hour later picks up where this one failed.
                Err(error) => tracing::warn!(%error, "purging finished jobs failed"),
            }
        }
    });
}

/// Deletes the jobs done before `before`, from the oldest, at `pace`; how many went. Parked
/// and dead jobs behind them are few, so every purge walks from the oldest.
pub async fn purge(
    db: &PgPool,
    before: DateTime<Utc>,
    pace: Pace,
    shutdown: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let walked = purge::walk(0, pace, shutdown, |after, scan| {
        jobs::purge_done(db, after, before, scan)
    })
    .await?;
    Ok(walked.deleted)
}
