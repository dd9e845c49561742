//! How long the webhook inbox keeps what it has processed. Bodies are kept a while after they
//! arrive (`WEBHOOK_RETENTION_DAYS`, a week by default), to look into what Meta sent; then they
//! go, or the inbox would grow by every webhook for ever (at 1,000 webhooks a second, some 90 GB
//! a day). The messages themselves are in the history. Webhooks parked for a number the
//! deployment does not serve are kept longer (`PARKED_WEBHOOK_RETENTION_DAYS`, 30 by default),
//! for `webhooks replay --parked` once the number is added: a number of the same WhatsApp
//! Business Account served elsewhere parks every webhook it gets, which kept for ever would fill
//! the disk. Failed ones stay until replayed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RetentionConfig;
use crate::purge::{self, PACE, Pace, Walked};
use crate::store::webhook_events::{self, Purged};

/// How often the inbox is purged (the first time at start-up).
const EVERY: Duration = Duration::from_secs(3600);

/// Every this many purges the walk starts again from the oldest webhook; the others go on from
/// where the last one stopped, so the parked and failed webhooks kept behind it are not looked
/// at again every hour. The full walk catches webhooks replayed behind it, and parked ones past
/// their retention.
const FULL_WALK_EVERY: u32 = 24;

/// The times before which webhooks go.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Processed webhooks received before this go.
    pub processed: DateTime<Utc>,
    /// Parked webhooks received before this go.
    pub parked: DateTime<Utc>,
}

impl Cutoffs {
    /// `retention` as of `now`.
    pub fn at(retention: &RetentionConfig, now: DateTime<Utc>) -> Self {
        Self {
            processed: now - retention.webhooks,
            parked: now - retention.parked_webhooks,
        }
    }
}

/// Purges the inbox every [`EVERY`] until shutdown.
pub fn spawn(db: PgPool, retention: RetentionConfig, shutdown: CancellationToken, tracker: &TaskTracker) {
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
            match purge(&db, Cutoffs::at(&retention, Utc::now()), after, PACE, &shutdown).await {
                Ok(Walked {
                    deleted,
                    resume_after: next,
                }) => {
                    resume_after = next;
                    if deleted.parked > 0 {
                        tracing::warn!(
                            deleted = deleted.parked,
                            days = retention.parked_webhooks.as_secs() / 86_400,
                            "webhooks parked for numbers not served deleted after their retention"
                        );
                    }
                    if deleted.processed > 0 {
                        tracing::info!(
                            deleted = deleted.processed,
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
    after: i64,
    pace: Pace,
    shutdown: &CancellationToken,
) -> Result<Walked<Purged>, sqlx::Error> {
    let walked = purge::walk(after, pace, shutdown, |after, scan| {
        webhook_events::purge_expired(db, after, cutoffs.processed, cutoffs.parked, scan)
    })
    .await?;
    metrics::counter!("webhook_events_purged_total", "state" => "processed")
        .increment(walked.deleted.processed);
    metrics::counter!("webhook_events_purged_total", "state" => "parked").increment(walked.deleted.parked);
    Ok(walked)
}
