//! The ingest loop: takes committed webhook bodies from the inbox in arrival order and
//! processes them in batches, one transaction per batch. Should an event fail, the batch is
//! rolled back and processed again with a savepoint per event, so one bad event cannot hold back
//! the others and nothing is half-applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::{Batch, Known};
use super::inbound::{self, IngestError};
use super::intake::WebhookInbox;
use crate::queue::Dispatch;
use crate::store::{self, webhook_events};

/// Events processed per transaction.
const BATCH: i64 = 200;

/// Longest sleep between two looks at the inbox when nobody wakes the loop (events another
/// replica stored and could not process).
const POLL: Duration = Duration::from_secs(1);

/// How long the oldest event of a batch must have waited before the loop gives way to the
/// acknowledgements: far past what a batch waits while processing keeps up (a few
/// milliseconds at 1,000 webhooks a second), so only an inbox that has fallen behind does.
const BEHIND: Duration = Duration::from_millis(500);

/// The longest rest after a batch, in batches' time, while the loop gives way: processing
/// keeps at least a quarter of its time. Where it kept half, a saturated machine acknowledged
/// 15 % fewer webhooks: processing a message costs it several times what acknowledging does.
const GIVE_WAY: u32 = 3;

/// Starts the loop; `wake` is notified by the webhook handler after each commit, and `inbox`
/// counts what it commits. The deliveries of the messages it stores go straight to
/// `dispatch`'s workers when nothing of their conversation is waiting.
pub fn spawn(
    db: PgPool,
    inbox: WebhookInbox,
    wake: Arc<Notify>,
    dispatch: Dispatch,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut known = Known::default();
        let mut committed = inbox.committed();
        loop {
            let started = Instant::now();
            let result = process_batch(&db, &dispatch, &mut known).await;
            // Counted from the previous batch's start, rest included: what came in while the
            // loop was resting is what it must make up for.
            let arrived = inbox.committed() - committed;
            committed += arrived;
            let pause = match result {
                Ok(taken) if taken.events == 0 => POLL,
                Ok(taken) => {
                    let rest = taken.rest(started.elapsed(), arrived);
                    if !rest.is_zero() {
                        metrics::counter!("webhook_ingest_gave_way_total").increment(1);
                        // No wake-up ends the rest: webhooks arrive throughout it.
                        tokio::select! {
                            _ = tokio::time::sleep(rest) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                    Duration::ZERO
                }
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

/// What a batch took.
#[derive(Debug, Default)]
struct Taken {
    /// How many events.
    events: usize,
    /// How long the oldest of them had waited in the inbox.
    waited: Duration,
}

impl Taken {
    fn of(events: &[webhook_events::PendingEvent]) -> Self {
        Self {
            events: events.len(),
            waited: events.first().map_or(Duration::ZERO, |e| {
                // A clock set back makes it negative: not late, then.
                Duration::try_from_secs_f64(e.waited_seconds).unwrap_or_default()
            }),
        }
    }

    /// How long the loop rests after this batch, which took `took`, given that `arrived`
    /// webhooks were committed since the batch before it started, to leave the machine to the
    /// acknowledgements. Only once the inbox is far behind: Meta retries a webhook answered
    /// late, and a late answer helps nobody, while a message processed later is merely later.
    /// The rest grows with the arrivals against what the batch took, up to [`GIVE_WAY`] times
    /// the batch, so processing never stops, and it catches up at full speed once webhooks
    /// stop coming.
    fn rest(&self, took: Duration, arrived: u64) -> Duration {
        if self.waited < BEHIND || self.events == 0 {
            return Duration::ZERO;
        }
        let events = self.events as u32;
        let arrivals = arrived.min(u64::from(events * GIVE_WAY)) as u32;
        took * arrivals / events
    }
}

/// Processes up to one batch, knowing what `known` holds and adding what it finds; returns what
/// it took.
async fn process_batch(db: &PgPool, dispatch: &Dispatch, known: &mut Known) -> Result<Taken, sqlx::Error> {
    match process_at_once(db, dispatch, known).await? {
        Some(taken) => Ok(taken),
        // An event failed and the whole batch was rolled back: event by event now, so the
        // failure stays with its event and the others go through.
        None => process_one_by_one(db).await,
    }
}

/// The common case: the whole batch in one transaction without savepoints (two round trips
/// fewer per event), the customers not met before looked up at once, its plain messages
/// stored together, its events marked done as they are taken (the few that end otherwise
/// corrected in one statement), its deliveries leased to `dispatch`'s workers and handed to
/// them after the commit. `None` when an event failed for a reason of its own; nothing of the
/// batch is then kept, nor what `known` held, which the batch takes and gives back only if it
/// succeeds.
async fn process_at_once(
    db: &PgPool,
    dispatch: &Dispatch,
    known: &mut Known,
) -> Result<Option<Taken>, sqlx::Error> {
    let (mut tx, events) = take_batch(db).await?;
    if events.is_empty() {
        return Ok(Some(Taken::default()));
    }
    // Taken once the inbox is ours: a shutdown waits for it.
    let lease = dispatch.lease();
    let Ok(notifications) = events
        .iter()
        .map(|e| inbound::parse(&e.body))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Ok(None);
    };
    let mut batch = lease
        .as_ref()
        .map_or_else(Batch::default, |lease| Batch::taken_by(lease.taker()))
        .knowing(std::mem::take(known));
    batch.prefetch(&mut tx, &notifications).await?;
    let mut finished = webhook_events::Finished::default();
    let mut states = Vec::with_capacity(events.len());
    for (event, notification) in events.iter().zip(&notifications) {
        match inbound::process(&mut tx, notification, &mut batch).await {
            Ok(outcome) => {
                states.push(outcome.state());
                finished.push(event.id, outcome.state(), outcome.note());
            }
            Err(IngestError::Database(error)) if retry_whole_batch(&error) => return Err(error),
            Err(_) => return Ok(None),
        }
    }
    match batch.flush(&mut tx).await {
        Ok(_) => {}
        Err(error) if retry_whole_batch(&error) => return Err(error),
        Err(_) => return Ok(None),
    }
    webhook_events::finish_all(&mut tx, &finished).await?;
    tx.commit().await?;
    if let Some(lease) = lease {
        dispatch.run(lease, batch.take_leased());
    }
    *known = batch.into_known();
    for (event, state) in events.iter().zip(states) {
        metrics::counter!("webhook_events_processed_total", "state" => state).increment(1);
        record_lag(event);
    }
    Ok(Some(Taken::of(&events)))
}

/// One savepoint per event, so a failing event is kept as `failed` without its partial work.
async fn process_one_by_one(db: &PgPool) -> Result<Taken, sqlx::Error> {
    let (mut tx, events) = take_batch(db).await?;
    let mut batch = Batch::default();
    for event in &events {
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        match process_alone(&mut savepoint, &event.body, &mut batch).await {
            Ok(outcome) => {
                savepoint.commit().await?;
                webhook_events::finish(&mut tx, event.id, outcome.state(), outcome.note().as_deref()).await?;
                metrics::counter!("webhook_events_processed_total", "state" => outcome.state()).increment(1);
            }
            Err(IngestError::Database(error)) if retry_whole_batch(&error) => return Err(error),
            Err(error) => {
                savepoint.rollback().await?;
                batch.forget();
                tracing::error!(event = event.id, %error, "webhook event could not be processed; kept as failed");
                webhook_events::finish(&mut tx, event.id, "failed", Some(&error.to_string())).await?;
                metrics::counter!("webhook_events_processed_total", "state" => "failed").increment(1);
            }
        }
        record_lag(event);
    }
    tx.commit().await?;
    Ok(Taken::of(&events))
}

/// One event with everything it defers stored, so that its failure stays its own.
async fn process_alone(
    conn: &mut sqlx::PgConnection,
    body: &[u8],
    batch: &mut Batch,
) -> Result<inbound::Outcome, IngestError> {
    let outcome = inbound::process(conn, &inbound::parse(body)?, batch).await?;
    batch.flush(conn).await?;
    Ok(outcome)
}

/// Opens the batch's transaction, waits for the inbox (one batch at a time across replicas) and
/// takes the oldest pending events.
async fn take_batch(
    db: &PgPool,
) -> Result<
    (
        sqlx::Transaction<'static, sqlx::Postgres>,
        Vec<webhook_events::PendingEvent>,
    ),
    sqlx::Error,
> {
    let mut tx = webhook_events::begin_holding_inbox(db).await?;
    let events = webhook_events::take_pending(&mut tx, BATCH).await?;
    Ok((tx, events))
}

fn record_lag(event: &webhook_events::PendingEvent) {
    let lag = (Utc::now() - event.received_at).num_milliseconds().max(0) as f64 / 1000.0;
    metrics::histogram!("webhook_processing_lag_seconds").record(lag);
}

/// Outages and concurrency conflicts (deadlock, serialization) pass; the batch runs again.
fn retry_whole_batch(error: &sqlx::Error) -> bool {
    store::is_unavailable(error)
        || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("40")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(events: usize, waited_ms: u64) -> Taken {
        Taken {
            events,
            waited: Duration::from_millis(waited_ms),
        }
    }

    const BATCH_TOOK: Duration = Duration::from_millis(40);

    #[test]
    fn an_inbox_that_keeps_up_never_rests() {
        assert_eq!(taken(200, 20).rest(BATCH_TOOK, 10_000), Duration::ZERO);
        assert_eq!(taken(200, 499).rest(BATCH_TOOK, 10_000), Duration::ZERO);
    }

    #[test]
    fn a_backlog_that_no_longer_grows_is_worked_through_at_full_speed() {
        assert_eq!(taken(200, 60_000).rest(BATCH_TOOK, 0), Duration::ZERO);
    }

    #[test]
    fn the_rest_grows_with_the_arrivals_up_to_a_bound() {
        let behind = taken(200, 600);
        assert_eq!(behind.rest(BATCH_TOOK, 20), BATCH_TOOK / 10);
        assert_eq!(behind.rest(BATCH_TOOK, 100), BATCH_TOOK / 2);
        assert_eq!(behind.rest(BATCH_TOOK, 200), BATCH_TOOK);
        let most = BATCH_TOOK * GIVE_WAY;
        assert_eq!(behind.rest(BATCH_TOOK, 200 * u64::from(GIVE_WAY)), most);
        assert_eq!(behind.rest(BATCH_TOOK, 50_000), most);
    }

    #[test]
    fn an_empty_batch_does_not_rest() {
        assert_eq!(taken(0, 0).rest(BATCH_TOOK, 500), Duration::ZERO);
    }
}
