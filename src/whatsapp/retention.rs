//! How long the webhook inbox keeps what it has processed. Bodies are kept a week after they
//! arrive, to look into what Meta sent; then they go, or the inbox would grow by every webhook
//! for ever (at 1,000 webhooks a second, some 90 GB a day). The messages themselves are in the
//! history. Webhooks parked for a number the deployment does not serve are kept 30 days, for
//! `webhooks replay --parked` once the number is added; failed ones stay until replayed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::webhook_events;

/// How long a processed webhook body is kept after it arrived.
pub const KEEP: Duration = Duration::from_secs(7 * 86_400);

/// How long a webhook parked for a number not served is kept after it arrived: a number of the
/// same WhatsApp Business Account served elsewhere parks every webhook it gets, which would
/// otherwise fill the disk.
pub const KEEP_PARKED: Duration = Duration::from_secs(30 * 86_400);

/// How often the inbox is purged (the first time at start-up).
const EVERY: Duration = Duration::from_secs(3600);

/// Every this many purges the walk starts again from the oldest webhook; the others go on from
/// where the last one stopped, so the parked and failed webhooks kept behind it are not looked
/// at again every hour. The full walk catches webhooks replayed behind it, and parked ones that
/// reached [`KEEP_PARKED`].
const FULL_WALK_EVERY: u32 = 24;

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

/// The times before which webhooks go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Processed webhooks received before this go.
    pub processed: DateTime<Utc>,
    /// Parked webhooks received before this go.
    pub parked: DateTime<Utc>,
}

impl Cutoffs {
    /// The service's retention, as of `now`.
    pub fn at(now: DateTime<Utc>) -> Self {
        Self {
            processed: now - KEEP,
            parked: now - KEEP_PARKED,
        }
    }
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Processed webhooks deleted.
    pub processed: u64,
    /// Parked webhooks deleted.
    pub parked: u64,
    /// Inbox id the next purge may go on after: behind it, nothing is left that this purge's
    /// cutoffs would delete.
    pub resume_after: i64,
}

/// Purges the inbox every [`EVERY`] until shutdown.
pub fn spawn(db: PgPool, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut resume_after = 0;
        for walk in 0u32.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let after = if walk % FULL_WALK_EVERY == 0 {
                0
            } else {
                resume_after
            };
            match purge(&db, Cutoffs::at(Utc::now()), after, PACE, &shutdown).await {
                Ok(purged) => {
                    resume_after = purged.resume_after;
                    if purged.parked > 0 {
                        tracing::warn!(
                            deleted = purged.parked,
                            "webhooks parked for numbers not served deleted after 30 days"
                        );
                    }
                    if purged.processed > 0 {
                        tracing::info!(
                            deleted = purged.processed,
                            "processed webhooks past their retention deleted"
                        );
                    }
                }
                // Another purge an hour later picks up where this one failed.
                Err(error) => tracing::warn!(%error, "purging the webhook inbox failed"),
            }
        }
    });
}

/// Deletes the webhooks past `cutoffs` after inbox id `after` at `pace`, until done or shut
/// down.
pub async fn purge(
    db: &PgPool,
    cutoffs: Cutoffs,
    mut after: i64,
    pace: Pace,
    shutdown: &CancellationToken,
) -> Result<Purged, sqlx::Error> {
    let mut processed = 0;
    let mut parked = 0;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let step =
            webhook_events::purge_expired(db, after, cutoffs.processed, cutoffs.parked, pace.scan).await?;
        processed += step.processed;
        parked += step.parked;
        match step.next {
            Some(next) => after = next,
            None => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(started.elapsed() * pace.rest) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    metrics::counter!("webhook_events_purged_total", "state" => "processed").increment(processed);
    metrics::counter!("webhook_events_purged_total", "state" => "parked").increment(parked);
    Ok(Purged {
        processed,
        parked,
        resume_after: after,
    })
}
