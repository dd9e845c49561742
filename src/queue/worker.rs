//! The claim → run → settle loop, its wake-up listener and its housekeeping.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use super::completions::Completions;
use super::{Handler, Job, JobError, ReadAhead, Registry, RetryPolicy};
use crate::store::{self, jobs};

/// Tuning of one process's workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// How long a claimed job stays ours; a job still running then is cut off and retried.
    pub lease: Duration,
    /// Longest idle sleep between two looks at the queue (notifications wake us sooner).
    pub poll_interval: Duration,
    /// Backoff and budget of failed jobs.
    pub retry: RetryPolicy,
    /// How long in-flight jobs may finish after shutdown starts before they are released.
    pub shutdown_grace: Duration,
    /// How long bursts of changes to one CRM timeline note are collected before it is written.
    pub debounce: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            debounce: crate::timeline::DEBOUNCE,
        }
    }
}

impl From<&crate::config::QueueConfig> for WorkerConfig {
    fn from(queue: &crate::config::QueueConfig) -> Self {
        Self {
            concurrency: queue.concurrency,
            lease: queue.lease,
            retry: RetryPolicy {
                base: queue.retry_base,
                max_delay: queue.retry_max_delay,
                max_attempts: queue.max_attempts,
            },
            shutdown_grace: queue.shutdown_grace,
            ..Self::default()
        }
    }
}

struct Worker {
    /// Claims and settles (relaxed commits, see [`store::relaxed_pool`]).
    db: PgPool,
    registry: Registry,
    config: WorkerConfig,
    id: String,
    wake: Notify,
    completions: Completions,
    settled: AtomicU64,
    /// Job notifications received (and listener reconnects): a run that saw this unchanged
    /// knows no job was inserted while it held its key.
    inserted: AtomicU64,
    /// One per job running at a time (`concurrency`).
    permits: Arc<Semaphore>,
    /// Every running job, and every lease given out by [`Dispatch::lease`]: shutdown waits for
    /// them before it releases what this worker still holds.
    in_flight: TaskTracker,
    /// Cancelled when the shutdown grace is over: unfinished jobs are cut off and released.
    hard_stop: CancellationToken,
    /// The process's shutdown, which stops the claim loop, the listener and housekeeping.
    shutdown: CancellationToken,
}

/// Runs jobs that were inserted already leased to this process's workers (fresh deliveries,
/// see `messages::insert_received`): they skip the notification, the claim and the row version
/// a claim writes. Cheap to clone.
#[derive(Clone)]
pub struct Dispatch {
    worker: Arc<Worker>,
}

/// Leave to insert jobs leased to this process's workers; while it is held, a shutdown waits
/// before releasing the jobs they hold, so none inserted under it is left leased to nobody.
pub struct Lease {
    taker: jobs::Taker,
    /// The workers free when it was given, one per run of jobs it may take: jobs are leased at
    /// their insert only when they can start at once. Leased to busy workers they waited for
    /// a permit, in short runs, and a crash stranded them for the lease.
    permits: Vec<OwnedSemaphorePermit>,
    /// Before the insert, so the lease measured from here ends no later than the one stored.
    since: Instant,
    _held: TaskTrackerToken,
}

impl Lease {
    /// Who to lease the jobs to.
    pub fn taker(&self) -> jobs::Taker {
        self.taker.clone()
    }
}

impl Dispatch {
    /// Leave to insert leased jobs, as many runs of them as workers are free, or `None` when
    /// none is or once shutdown began (jobs are then queued for whichever worker claims them).
    pub fn lease(&self) -> Option<Lease> {
        let held = self.worker.in_flight.token();
        if self.worker.shutdown.is_cancelled() {
            return None;
        }
        let mut permits = Vec::new();
        while let Ok(permit) = self.worker.permits.clone().try_acquire_owned() {
            permits.push(permit);
        }
        if permits.is_empty() {
            return None;
        }
        Some(Lease {
            taker: jobs::Taker {
                worker: self.worker.id.clone(),
                lease_seconds: self.worker.config.lease.as_secs_f64(),
                runs: permits.len(),
            },
            permits,
            since: Instant::now(),
            _held: held,
        })
    }

    /// Runs `jobs`, inserted under `lease` and committed (in id order): those of one ordering
    /// key in a row, each run on one of the lease's workers, and then the jobs queued behind
    /// them in their keys, as after a claim. From [`READ_TOGETHER`] jobs on, what their
    /// handlers need is read for all of them at once. The workers left over are free again.
    pub fn run(&self, lease: Lease, jobs: Vec<Job>) {
        if jobs.len() < READ_TOGETHER {
            spawn_runs(&self.worker, lease, jobs, HashMap::new());
            return;
        }
        let worker = self.worker.clone();
        // The lease goes with the task, so a shutdown waits for the runs to be under way.
        self.worker.in_flight.spawn(async move {
            let ahead = read_ahead(&worker, &jobs).await;
            spawn_runs(&worker, lease, jobs, ahead);
        });
    }
}

/// Jobs at hand from which one read serves them all. Under load, a batch's or a claim's jobs
/// each reading their own cost as many statements and round trips, and `ingest` acknowledged
/// about an eighth fewer webhooks; a few jobs that wait for one another's rows are later than
/// each reading its own at once (the end-to-end median at 1,000 webhooks a second rose by up to
/// a millisecond when every batch was read together). BENCHMARKS.md, fourteenth round.
const READ_TOGETHER: usize = 8;

/// Starts the runs of `jobs` (in id order) leased under `lease`, one per ordering key, with what
/// was read ahead for them.
fn spawn_runs(worker: &Arc<Worker>, lease: Lease, jobs: Vec<Job>, mut ahead: HashMap<i64, ReadAhead>) {
    let mut runs: Vec<Vec<(Job, Option<ReadAhead>)>> = Vec::new();
    let mut of_key: HashMap<String, usize> = HashMap::new();
    for job in jobs {
        let read = ahead.remove(&job.id);
        match job.ordering_key.clone() {
            Some(key) => match of_key.get(&key) {
                Some(&run) => runs[run].push((job, read)),
                None => {
                    of_key.insert(key, runs.len());
                    runs.push(vec![(job, read)]);
                }
            },
            None => runs.push(vec![(job, read)]),
        }
    }
    let Lease {
        mut permits, since, ..
    } = lease;
    for run in runs {
        let worker = worker.clone();
        // Every run was counted against `Taker::runs`, so the lease holds a permit for each;
        // were one missing, the run waits for a free worker rather than be stranded.
        let held = permits.pop();
        worker.in_flight.clone().spawn(async move {
            let permit = match held {
                Some(permit) => permit,
                None => tokio::select! {
                    permit = worker.permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
                    // Still leased to us: the shutdown releases them with every job we hold.
                    _ = worker.shutdown.cancelled() => return,
                },
            };
            run_chain(&worker, run, since).await;
            drop(permit);
        });
    }
}

/// Connections of the claim loop, the settles and housekeeping (handlers use their own pool).
const BOOKKEEPING_CONNECTIONS: u32 = 4;

/// Starts this process's workers, its LISTEN connection and housekeeping, all stopping when
/// `shutdown` is cancelled; returns the handle that runs jobs inserted leased to them.
pub fn spawn(
    db: PgPool,
    registry: Registry,
    config: WorkerConfig,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Dispatch {
    let id = format!("worker-{}", uuid::Uuid::now_v7().simple());
    let db = store::relaxed_pool(&db, BOOKKEEPING_CONNECTIONS);
    let worker = Arc::new(Worker {
        completions: Completions::spawn(db.clone(), id.clone(), tracker),
        db,
        registry,
        permits: Arc::new(Semaphore::new(config.concurrency)),
        config,
        id,
        wake: Notify::new(),
        settled: AtomicU64::new(0),
        inserted: AtomicU64::new(0),
        in_flight: TaskTracker::new(),
        hard_stop: CancellationToken::new(),
        shutdown,
    });
    tracker.spawn(listen(worker.clone()));
    tracker.spawn(housekeeping(worker.clone()));
    tracker.spawn(claim_loop(worker.clone()));
    Dispatch { worker }
}

async fn claim_loop(worker: Arc<Worker>) {
    let shutdown = &worker.shutdown;
    loop {
        let first = tokio::select! {
            permit = worker.permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        // Dispatched jobs take permits too: hold every free one while claiming that many.
        let mut held = vec![first];
        while let Ok(permit) = worker.permits.clone().try_acquire_owned() {
            held.push(permit);
        }
        let lease = worker.config.lease.as_secs_f64();
        let claimed = match jobs::claim(&worker.db, &worker.id, held.len() as i64, lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                drop(held);
                tracing::warn!(%error, "claiming jobs failed; retrying");
                if sleep_or_stop(Duration::from_secs(1), shutdown).await {
                    break;
                }
                continue;
            }
        };
        if claimed.is_empty() {
            drop(held);
            let wait = idle_wait(&worker).await;
            tokio::select! {
                _ = worker.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let claimed_at = Instant::now();
        let mut ahead = if claimed.len() >= READ_TOGETHER {
            read_ahead(&worker, &claimed).await
        } else {
            HashMap::new()
        };
        for job in claimed {
            let permit = held.pop().expect("claimed no more jobs than permits held");
            let runner = worker.clone();
            let read = ahead.remove(&job.id);
            worker.in_flight.spawn(async move {
                run_chain(&runner, vec![(job, read)], claimed_at).await;
                drop(permit);
            });
        }
    }
    worker.in_flight.close();
    if tokio::time::timeout(worker.config.shutdown_grace, worker.in_flight.wait())
        .await
        .is_err()
    {
        worker.hard_stop.cancel();
        worker.in_flight.wait().await;
    }
    match jobs::release(&worker.db, &worker.id, None).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(released = n, "released leased jobs at shutdown"),
        Err(error) => tracing::warn!(%error, "could not release leased jobs; their leases will expire"),
    }
}

/// How long to sleep when nothing is due: until the next scheduled job, at most one poll
/// interval.
async fn idle_wait(worker: &Worker) -> Duration {
    let poll = worker.config.poll_interval;
    match jobs::next_run_at(&worker.db).await {
        Ok(Some(next)) => (next - Utc::now())
            .to_std()
            .map_or(poll, |until| until.clamp(Duration::from_millis(5), poll)),
        _ => poll,
    }
}

/// Returns true when shutdown started during the sleep.
async fn sleep_or_stop(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(duration) => false,
        _ = shutdown.cancelled() => true,
    }
}

/// Jobs of one ordering key a task may run in a row before it hands its permit back.
const CHAIN: usize = 64;

/// Successors claimed at a time by a task that just ran their key's head.
const CHAIN_STEP: i64 = 16;

/// Runs `first` (jobs of one ordering key in id order, leased at `claimed`, each with what was
/// read ahead for it, if anything) and, while its jobs
/// succeed, the due jobs queued behind them in their ordering key: they are claimed while their
/// predecessor still holds the key, so no other worker can take them, and they run in order in
/// this task. A backlog of one conversation then costs a claim per step of the chain instead
/// of a claim per job.
async fn run_chain(worker: &Worker, first: Vec<(Job, Option<ReadAhead>)>, claimed: Instant) {
    let mut chain: VecDeque<(Job, Instant, Option<ReadAhead>)> = first
        .into_iter()
        .map(|(job, ahead)| (job, claimed, ahead))
        .collect();
    let mut ran = 0;
    while let Some((job, claimed, ahead)) = chain.pop_front() {
        if claimed.elapsed() > worker.config.lease / 2 {
            // Slow predecessors used up half of this lease: let a fresh claim take it.
            let rest = std::iter::once(job.id).chain(chain.drain(..).map(|(j, ..)| j.id));
            release_all(worker, rest.collect()).await;
            return;
        }
        let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        let Some(outcome) = execute(worker, &job, claimed, ahead)
            .instrument(span.clone())
            .await
        else {
            release_all(worker, chain.drain(..).map(|(j, ..)| j.id).collect()).await;
            return;
        };
        ran += 1;
        // Set when nothing was queued behind this job and no job has been inserted since: its
        // end then makes no other job due, and the claim loop need not look.
        let mut inserted_at_look = None;
        if outcome.is_ok()
            && chain.is_empty()
            && ran < CHAIN
            && let Some(key) = &job.ordering_key
        {
            let lease = worker.config.lease.as_secs_f64();
            let inserted = worker.inserted.load(Ordering::Relaxed);
            match jobs::claim_successors(&worker.db, &worker.id, key, job.id, CHAIN_STEP, lease).await {
                Ok(next) if next.is_empty() => inserted_at_look = Some(inserted),
                Ok(next) => {
                    let claimed = Instant::now();
                    let mut ahead = read_ahead(worker, &next).await;
                    chain.extend(next.into_iter().map(|j| {
                        let ahead = ahead.remove(&j.id);
                        (j, claimed, ahead)
                    }));
                }
                Err(error) => tracing::warn!(%error, "claiming the jobs queued behind this one failed"),
            }
        }
        let lease_end = claimed + worker.config.lease;
        settle(
            &worker.db,
            &worker.id,
            Some(&worker.completions),
            worker.config.retry,
            &job,
            &outcome,
            lease_end,
        )
        .instrument(span)
        .await;
        worker.settled.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            release_all(worker, chain.drain(..).map(|(j, ..)| j.id).collect()).await;
        }
        let nothing_behind =
            inserted_at_look.is_some_and(|seen| seen == worker.inserted.load(Ordering::Relaxed));
        if job.ordering_key.is_some() && chain.is_empty() && !nothing_behind {
            // Its successor in the same ordering key may now be due.
            worker.wake.notify_one();
        }
    }
}

/// What the handlers of `jobs` read ahead for them, by job id. A failing read ahead only
/// leaves its jobs to read for themselves.
async fn read_ahead(worker: &Worker, jobs: &[Job]) -> HashMap<i64, ReadAhead> {
    let mut kinds: Vec<&str> = jobs.iter().map(|j| j.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut ahead = HashMap::new();
    for kind in kinds {
        let Some(handler) = worker.registry.get(kind) else {
            continue;
        };
        let of_kind: Vec<&Job> = jobs.iter().filter(|j| j.kind == kind).collect();
        match AssertUnwindSafe(handler.read_ahead(&of_kind))
            .catch_unwind()
            .await
        {
            Ok(read) => ahead.extend(read),
            Err(_panic) => tracing::warn!(kind, "reading ahead panicked; the jobs read for themselves"),
        }
    }
    ahead
}

/// Runs a job's handler within its lease; `None` when shutdown cut it off (it is released).
async fn execute(
    worker: &Worker,
    job: &Job,
    claimed: Instant,
    ahead: Option<ReadAhead>,
) -> Option<Result<(), JobError>> {
    let started = Instant::now();
    let outcome = match worker.registry.get(&job.kind) {
        None => Err(JobError::permanent(format!(
            "no handler for job kind {:?}",
            job.kind
        ))),
        Some(handler) => {
            // The run must end before the lease does, or another worker could start it too.
            let budget = worker.config.lease.mul_f64(0.8).saturating_sub(claimed.elapsed());
            let run = AssertUnwindSafe(handler.run_read_ahead(job, ahead)).catch_unwind();
            tokio::select! {
                result = tokio::time::timeout(budget, run) => match result {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_panic)) => Err(JobError::retry("the handler panicked")),
                    Err(_) => Err(JobError::retry(format!("timed out after {budget:?}"))),
                },
                _ = worker.hard_stop.cancelled() => {
                    tracing::info!("shutdown: releasing unfinished job");
                    release_all(worker, vec![job.id]).await;
                    return None;
                }
            }
        }
    };
    record_outcome(job, &outcome, started);
    Some(outcome)
}

/// Hands claimed jobs back to the queue without charging an attempt.
async fn release_all(worker: &Worker, ids: Vec<i64>) {
    if ids.is_empty() {
        return;
    }
    if let Err(error) = jobs::release(&worker.db, &worker.id, Some(&ids)).await {
        tracing::warn!(%error, jobs = ids.len(), "could not release jobs; their leases will expire");
    }
}

fn record_outcome(job: &Job, outcome: &Result<(), JobError>, started: Instant) {
    let label = outcome_label(outcome);
    metrics::counter!("jobs_finished_total", "kind" => job.kind.clone(), "outcome" => label).increment(1);
    metrics::histogram!("job_duration_seconds", "kind" => job.kind.clone())
        .record(started.elapsed().as_secs_f64());
}

/// Runs one queued job now, in the caller's task, as a worker would (claim under a lease, run,
/// settle). Enqueue such a job with a later `run_at` so workers leave it to the caller; should
/// the caller die first, workers take it at that time. `None` when it is not the caller's to
/// run (an earlier job of its ordering key has not finished): it is then left to the workers.
pub async fn run_inline(
    db: &PgPool,
    job_id: i64,
    handler: &dyn Handler,
    retry: RetryPolicy,
) -> Result<Option<Result<(), JobError>>, sqlx::Error> {
    let me = format!("inline-{}", uuid::Uuid::now_v7().simple());
    let lease = WorkerConfig::default().lease;
    let Some(job) = jobs::claim_id(db, job_id, &me, lease.as_secs_f64()).await? else {
        jobs::make_due(db, job_id).await?;
        return Ok(None);
    };
    let started = Instant::now();
    let outcome = match tokio::time::timeout(
        lease.mul_f64(0.8),
        AssertUnwindSafe(handler.run(&job)).catch_unwind(),
    )
    .await
    {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_panic)) => Err(JobError::retry("the handler panicked")),
        Err(_) => Err(JobError::retry("timed out")),
    };
    record_outcome(&job, &outcome, started);
    settle(db, &me, None, retry, &job, &outcome, started + lease).await;
    Ok(Some(outcome))
}

fn outcome_label(outcome: &Result<(), JobError>) -> &'static str {
    match outcome {
        Ok(()) => "done",
        Err(JobError::Retry { .. }) => "retry",
        Err(JobError::Defer { .. }) => "deferred",
        Err(JobError::Permanent(_)) => "dead",
        Err(JobError::Park { .. }) => "parked",
    }
}

/// Records how a run ended, while the lease (ending at `lease_end`) is ours; successes go
/// through `completions` when given. A database outage is waited out until then: once the
/// lease is over the job runs again anyway, which is what a lost settle would lead to, so
/// giving up earlier would only add a duplicate run.
async fn settle(
    db: &PgPool,
    me: &str,
    completions: Option<&Completions>,
    policy: RetryPolicy,
    job: &Job,
    outcome: &Result<(), JobError>,
    lease_end: Instant,
) {
    let mut attempt = 0u32;
    loop {
        let result = match (outcome, completions) {
            (Ok(()), Some(completions)) => completions.complete(job.id).await,
            _ => settle_once(db, me, policy, job, outcome).await.map_err(Arc::new),
        };
        match result {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!("lease lost before the job was settled; another worker owns it now");
                return;
            }
            Err(error) => {
                let pause = Duration::from_millis(100 << attempt.min(4));
                if Instant::now() + pause >= lease_end {
                    tracing::warn!(%error, "could not settle the job before its lease ran out; it will run again");
                    return;
                }
                tracing::warn!(%error, attempt, "settling job failed; retrying");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    }
}

/// One attempt at recording the outcome; false when the lease was no longer ours.
async fn settle_once(
    db: &PgPool,
    me: &str,
    policy: RetryPolicy,
    job: &Job,
    outcome: &Result<(), JobError>,
) -> Result<bool, sqlx::Error> {
    let id = job.id;
    match outcome {
        Ok(()) => jobs::complete(db, id, me).await,
        Err(JobError::Retry { error, .. }) if policy.exhausted(job.attempts) => {
            tracing::error!(
                error,
                attempts = job.attempts,
                "job dead-lettered after its last attempt"
            );
            jobs::bury(db, id, me, error).await
        }
        Err(JobError::Retry { error, after }) => {
            let delay = policy.delay(job.attempts, *after);
            tracing::warn!(error, retry_in = ?delay, "job failed; will retry");
            jobs::reschedule(db, id, me, in_future(delay), Some(error), false).await
        }
        Err(JobError::Defer { reason, after }) => {
            tracing::info!(reason, retry_in = ?after, "job deferred");
            jobs::reschedule(db, id, me, in_future(*after), Some(reason), true).await
        }
        Err(JobError::Permanent(error)) => {
            tracing::error!(error, "job failed permanently; dead-lettered");
            jobs::bury(db, id, me, error).await
        }
        Err(JobError::Park { on, reason }) => {
            tracing::info!(on, reason, "job parked");
            jobs::park(db, id, me, on, reason).await
        }
    }
}

fn in_future(delay: Duration) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1))
}

/// Wakes the claim loop whenever a job is inserted anywhere (the table's NOTIFY trigger).
async fn listen(worker: Arc<Worker>) {
    let shutdown = &worker.shutdown;
    let mut backoff = Duration::from_secs(1);
    loop {
        match PgListener::connect_with(&worker.db).await {
            Ok(mut listener) => match listener.listen("jobs").await {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    // Notifications sent while we were not listening are lost: look once.
                    worker.inserted.fetch_add(1, Ordering::Relaxed);
                    worker.wake.notify_one();
                    loop {
                        tokio::select! {
                            received = listener.recv() => match received {
                                Ok(_) => {
                                    worker.inserted.fetch_add(1, Ordering::Relaxed);
                                    worker.wake.notify_one();
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "job notifications interrupted");
                                    break;
                                }
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "LISTEN jobs failed"),
            },
            Err(error) => tracing::debug!(%error, "job listener cannot connect yet"),
        }
        if sleep_or_stop(backoff, shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Jobs settled by this process after which housekeeping vacuums the queue. Every claim and
/// settle leaves a dead row version whose index entries the claim queries step over until
/// VACUUM removes them; autovacuum looks at a table at most once a minute, by which time a
/// busy queue has left tens of thousands and every claim has slowed down.
const VACUUM_AFTER: u64 = 5_000;

/// Settled jobs before the first vacuum of this process; the interval then doubles up to
/// [`VACUUM_AFTER`]. A vacuum records the table's size, and that makes PostgreSQL plan the
/// queue's prepared statements again: plans made while the table was nearly empty (a new
/// installation) read it whole, and went on doing so as it grew.
const FIRST_VACUUM_AFTER: u64 = 500;

/// How often housekeeping counts settled jobs; a busy queue settles thousands a second.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// How often the queue gauges are refreshed (a count over the unfinished jobs).
const GAUGES_EVERY: Duration = Duration::from_secs(10);

/// Vacuums the queue while it is busy and publishes queue gauges.
async fn housekeeping(worker: Arc<Worker>) {
    let shutdown = &worker.shutdown;
    let mut tick = tokio::time::interval(HOUSEKEEPING_TICK);
    let mut last_gauges: Option<Instant> = None;
    let mut since_vacuum = 0;
    let mut vacuum_after = FIRST_VACUUM_AFTER;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        since_vacuum += worker.settled.swap(0, Ordering::Relaxed);
        if since_vacuum >= vacuum_after {
            since_vacuum = 0;
            vacuum_after = (vacuum_after * 2).min(VACUUM_AFTER);
            if let Err(error) = jobs::vacuum(&worker.db).await {
                tracing::debug!(%error, "vacuuming the queue failed");
            }
        }
        if last_gauges.is_some_and(|at| at.elapsed() < GAUGES_EVERY) {
            continue;
        }
        last_gauges = Some(Instant::now());
        if let Ok(depths) = jobs::depth(&worker.db).await {
            for state in ["queued", "running", "parked", "dead"] {
                let row = depths.iter().find(|d| d.state == state);
                metrics::gauge!("jobs_depth", "state" => state).set(row.map_or(0.0, |d| d.count as f64));
                metrics::gauge!("jobs_oldest_age_seconds", "state" => state)
                    .set(row.map_or(0.0, |d| d.oldest_age_seconds));
            }
        }
    }
}
