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

/// How a purge goes through the inbox.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Webhooks looked at per statement: a short transaction each, so the purge never holds
    /// many rows locked, and a first purge of a large inbox does not hold one transaction open.
    pub scan: i64,
    /// After each statement the purge rests this many times as long as the statement took.
    pub rest: u32,
}

/// The service's pace: a tenth of one connection's time, in statements of about 10 ms. Purging
/// a million webhooks back to back while 400 a second arrived took the acknowledgements' p99
/// from 7–10 ms to 425–543 ms; at this pace it stayed within the machine's noise, and the
/// million went in about 140 s, 7,000 a second on a slow machine (BENCHMARKS.md, thirteenth
/// round). The rest is a multiple of the statement's time, so a loaded database is left more.
pub const PACE: Pace = Pace { scan: 1_000, rest: 9 };

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
            match purge(&db, cutoff, PACE, &shutdown).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "processed webhooks past their retention deleted"),
                // Another purge an hour later picks up where this one failed.
                Err(error) => tracing::warn!(%error, "purging processed webhooks failed"),
            }
        }
    });
}

/// Deletes the processed webhooks received before `cutoff` at `pace`, until done or shut down;
/// how many were deleted.
pub async fn purge(
    db: &PgPool,
    cutoff: DateTime<Utc>,
    pace: Pace,
    shutdown: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    let mut after = 0;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let step = webhook_events::purge_processed(db, after, cutoff, pace.scan).await?;
        deleted += step.deleted;
        match step.next {
            Some(next) => after = next,
            None => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(started.elapsed() * pace.rest) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    metrics::counter!("webhook_events_purged_total").increment(deleted);
    Ok(deleted)
}
