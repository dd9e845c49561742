//! SQL of the durable job queue (see `queue` for the worker that drives it).
//!
//! Statements that fetch jobs by id test their state with `CASE`, not `state = '…'`. Every
//! state change leaves dead entries in the partial indexes on `state`, and a plain comparison
//! lets the planner answer "these few ids, if queued" by reading one of those indexes whole
//! (it trusts statistics taken while the queue was short); behind a `CASE` no partial index
//! qualifies, and the ids are looked up in the primary key.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool};

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Which handler runs it.
    pub kind: &'static str,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Jobs with the same key run one at a time, in insertion order.
    pub ordering_key: Option<String>,
    /// A second job with the same key is not inserted.
    pub dedup_key: Option<String>,
    /// Not before this time.
    pub run_at: Option<DateTime<Utc>>,
}

impl NewJob {
    /// A job of `kind` whose payload is `payload` serialised to JSON.
    pub fn new(kind: &'static str, payload: &impl Serialize) -> Self {
        Self {
            kind,
            payload: serde_json::to_value(payload).expect("job payloads serialise to JSON"),
            ordering_key: None,
            dedup_key: None,
            run_at: None,
        }
    }

    /// Runs after every earlier job with the same key.
    pub fn ordered_by(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    /// Is inserted only once per key.
    pub fn dedup(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
}

/// The worker a statement that queues jobs may lease them to at once, so they skip the
/// wake-up and the claim (see `queue::Dispatch`).
#[derive(Debug, Clone)]
pub struct Taker {
    /// The worker's id, written as the jobs' `locked_by`.
    pub worker: String,
    /// The lease's length.
    pub lease_seconds: f64,
    /// How many more runs (ordering keys, or single jobs without one) it can start at once.
    pub runs: usize,
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Queue id.
    pub id: i64,
    /// Handler name.
    pub kind: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Ordering key, if any.
    pub ordering_key: Option<String>,
    /// Attempts including this one.
    pub attempts: i32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
}

/// Inserts a job; returns its id, or `None` when the dedup key already exists.
/// Workers are woken by the table's NOTIFY trigger when the transaction commits.
pub async fn enqueue(conn: &mut PgConnection, job: NewJob) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO jobs (kind, payload, ordering_key, dedup_key, run_at)
           VALUES ($1, $2, $3, $4, COALESCE($5, now()))
           ON CONFLICT (dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
           RETURNING id"#,
        job.kind,
        job.payload,
        job.ordering_key,
        job.dedup_key,
        job.run_at,
    )
    .fetch_optional(conn)
    .await
}

/// The keys among `keys` that have a queued, running or parked job: a job inserted with one of
/// them has to wait its turn.
pub async fn unfinished_keys(db: impl PgExecutor<'_>, keys: &[String]) -> Result<Vec<String>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // A lone key has a statement of its own: PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten keys), which costs more than running it.
    if let [key] = keys {
        let unfinished = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs
                              WHERE ordering_key = $1 AND state IN ('queued', 'running', 'parked')) AS "unfinished!""#,
            key
        )
        .fetch_one(db)
        .await?;
        return Ok(if unfinished { vec![key.clone()] } else { Vec::new() });
    }
    // A probe per key that stops at its first job: a key with a backlog has thousands.
    sqlx::query_scalar!(
        r#"SELECT k AS "key!" FROM unnest($1::text[]) AS k
           WHERE EXISTS (SELECT 1 FROM jobs WHERE ordering_key = k AND state IN ('queued', 'running', 'parked'))"#,
        keys
    )
    .fetch_all(db)
    .await
}

/// Leases up to `limit` due jobs to `worker`. A job is due when its time has come and no
/// earlier job of its ordering key is still queued, running or parked. A running job whose
/// lease ran out (its worker died) is due again at once.
///
/// Two looks keep the cost independent of the backlog's depth: first at the oldest queued jobs
/// (and leases that ran out), which in a backlog are mostly the heads of their keys; only when
/// none of those is due, at the head of every ordering key with unfinished work, which costs a
/// probe per key. Scanning every due job instead made one claim cost a pass over the whole
/// backlog, since the successors of a retrying head are due but blocked.
pub async fn claim(
    db: &PgPool,
    worker: &str,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Job>, sqlx::Error> {
    let claimed = claim_oldest(db, worker, limit, lease_seconds).await?;
    if !claimed.is_empty() {
        return Ok(claimed);
    }
    claim_heads(db, worker, limit, lease_seconds).await
}

/// Leases due jobs among the oldest queued ones (a window a few times `limit` wide) and those
/// whose lease ran out. The window is fetched by id (`= ANY`), because once the table's
/// statistics see a backlog the planner would rather join it against every due job.
async fn claim_oldest(
    db: &PgPool,
    worker: &str,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as!(
        Job,
        r#"WITH due AS (
               SELECT j.id FROM jobs j
               WHERE j.id = ANY (ARRAY(
                       (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT $4)
                       UNION ALL
                       (SELECT id FROM jobs WHERE state = 'running' AND locked_until < now()
                        ORDER BY locked_until LIMIT $1)))
                 AND CASE j.state WHEN 'queued' THEN j.run_at <= now()
                                  WHEN 'running' THEN j.locked_until < now() ELSE false END
                 AND (j.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM jobs e
                       WHERE e.ordering_key = j.ordering_key AND e.id < j.id
                         AND e.state IN ('queued', 'running', 'parked')))
               ORDER BY j.id
               LIMIT $1
               FOR UPDATE OF j SKIP LOCKED)
           UPDATE jobs SET state = 'running', locked_by = $2,
                  locked_until = now() + make_interval(secs => $3),
                  attempts = jobs.attempts + 1, updated_at = now()
           FROM due WHERE jobs.id = due.id
           RETURNING jobs.id, jobs.kind, jobs.payload, jobs.ordering_key, jobs.attempts,
                     jobs.created_at"#,
        limit,
        worker,
        lease_seconds,
        limit * 4 + 64,
    )
    .fetch_all(db)
    .await
}

/// Leases due jobs among the heads of the ordering keys (found by a skip scan of the ordering
/// index, one probe per key) and the due jobs without a key, fetched by id for the same reason
/// as in [`claim_oldest`].
async fn claim_heads(
    db: &PgPool,
    worker: &str,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as!(
        Job,
        r#"WITH RECURSIVE heads AS (
               (SELECT ordering_key, id FROM jobs
                WHERE state IN ('queued', 'running', 'parked') AND ordering_key IS NOT NULL
                ORDER BY ordering_key, id LIMIT 1)
               UNION ALL
               SELECT next.ordering_key, next.id FROM heads h CROSS JOIN LATERAL (
                   SELECT ordering_key, id FROM jobs
                   WHERE state IN ('queued', 'running', 'parked') AND ordering_key > h.ordering_key
                   ORDER BY ordering_key, id LIMIT 1) next),
           candidates AS (
               SELECT id FROM heads
               UNION ALL
               (SELECT id FROM jobs WHERE state = 'queued' AND ordering_key IS NULL AND run_at <= now()
                ORDER BY run_at, id LIMIT $1)
               UNION ALL
               (SELECT id FROM jobs WHERE state = 'running' AND ordering_key IS NULL AND locked_until < now()
                ORDER BY locked_until LIMIT $1)),
           due AS (
               SELECT j.id FROM jobs j
               WHERE j.id = ANY (ARRAY(SELECT id FROM candidates))
                 AND CASE j.state WHEN 'queued' THEN j.run_at <= now()
                                  WHEN 'running' THEN j.locked_until < now() ELSE false END
               ORDER BY j.run_at, j.id
               LIMIT $1
               FOR UPDATE OF j SKIP LOCKED)
           UPDATE jobs SET state = 'running', locked_by = $2,
                  locked_until = now() + make_interval(secs => $3),
                  attempts = jobs.attempts + 1, updated_at = now()
           FROM due WHERE jobs.id = due.id
           RETURNING jobs.id, jobs.kind, jobs.payload, jobs.ordering_key, jobs.attempts,
                     jobs.created_at"#,
        limit,
        worker,
        lease_seconds,
    )
    .fetch_all(db)
    .await
}

/// Leases to `worker` the jobs queued behind job `after` in ordering key `key`, up to `limit`,
/// as long as they follow each other without a gap (a job not due yet, running or parked ends
/// the run). Called while `worker` still holds `after`, so nobody else can claim them.
pub async fn claim_successors(
    db: &PgPool,
    worker: &str,
    key: &str,
    after: i64,
    limit: i64,
    lease_seconds: f64,
) -> Result<Vec<Job>, sqlx::Error> {
    let mut claimed = sqlx::query_as!(
        Job,
        r#"WITH next AS (
               SELECT id FROM (
                   SELECT id, bool_and(state = 'queued' AND run_at <= now()) OVER (ORDER BY id) AS unbroken
                   FROM (SELECT id, state, run_at FROM jobs
                         WHERE ordering_key = $3 AND id > $4 AND state IN ('queued', 'running', 'parked')
                         ORDER BY id LIMIT $5) behind) run
               WHERE unbroken)
           UPDATE jobs SET state = 'running', locked_by = $1,
                  locked_until = now() + make_interval(secs => $2),
                  attempts = jobs.attempts + 1, updated_at = now()
           WHERE jobs.id = ANY (ARRAY(SELECT id FROM next))
             AND CASE jobs.state WHEN 'queued' THEN true ELSE false END
           RETURNING jobs.id, jobs.kind, jobs.payload, jobs.ordering_key, jobs.attempts,
                     jobs.created_at"#,
        worker,
        lease_seconds,
        key,
        after,
        limit,
    )
    .fetch_all(db)
    .await?;
    claimed.sort_by_key(|job| job.id);
    Ok(claimed)
}

/// Leases one particular job to `worker`, whatever its scheduled time, unless an earlier job
/// of its ordering key is unfinished (same rule as [`claim`]).
pub async fn claim_id(
    db: impl PgExecutor<'_>,
    id: i64,
    worker: &str,
    lease_seconds: f64,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as!(
        Job,
        r#"UPDATE jobs SET state = 'running', locked_by = $2,
                  locked_until = now() + make_interval(secs => $3),
                  attempts = jobs.attempts + 1, updated_at = now()
           WHERE jobs.id = (
               SELECT j.id FROM jobs j
               WHERE j.id = $1 AND j.state = 'queued'
                 AND (j.ordering_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM jobs e
                       WHERE e.ordering_key = j.ordering_key AND e.id < j.id
                         AND e.state IN ('queued', 'running', 'parked')))
               FOR UPDATE SKIP LOCKED)
           RETURNING jobs.id, jobs.kind, jobs.payload, jobs.ordering_key, jobs.attempts,
                     jobs.created_at"#,
        id,
        worker,
        lease_seconds,
    )
    .fetch_optional(db)
    .await
}

/// Makes a queued job due now.
pub async fn make_due(db: impl PgExecutor<'_>, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE jobs SET run_at = now(), updated_at = now() WHERE id = $1 AND state = 'queued'",
        id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Marks a job done, if this worker still holds its lease. A job without a dedup key is
/// deleted instead: nothing reads a finished job but the dedup check, and marking it done wrote
/// a new row version with its payload and an index entry, which a vacuum then had to remove.
pub async fn complete(db: impl PgExecutor<'_>, id: i64, worker: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM jobs
               WHERE id = $1 AND locked_by = $2
                 AND CASE state WHEN 'running' THEN dedup_key IS NULL ELSE false END
               RETURNING id),
           kept AS (
               UPDATE jobs SET state = 'done', locked_by = NULL, locked_until = NULL, last_error = NULL,
                      finished_at = now(), updated_at = now()
               WHERE id = $1 AND locked_by = $2
                 AND CASE state WHEN 'running' THEN dedup_key IS NOT NULL ELSE false END
               RETURNING id)
           SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM kept) AS "done!""#,
        id,
        worker,
    )
    .fetch_one(db)
    .await?;
    Ok(done == 1)
}

/// Marks the jobs among `ids` that `worker` still holds done (deleting those without a dedup
/// key, as [`complete`] does); returns their ids.
pub async fn complete_many(
    db: impl PgExecutor<'_>,
    ids: &[i64],
    worker: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM jobs
               WHERE id = ANY ($1) AND locked_by = $2
                 AND CASE state WHEN 'running' THEN dedup_key IS NULL ELSE false END
               RETURNING id),
           kept AS (
               UPDATE jobs SET state = 'done', locked_by = NULL, locked_until = NULL, last_error = NULL,
                      finished_at = now(), updated_at = now()
               WHERE id = ANY ($1) AND locked_by = $2
                 AND CASE state WHEN 'running' THEN dedup_key IS NOT NULL ELSE false END
               RETURNING id)
           SELECT id AS "id!" FROM gone UNION ALL SELECT id FROM kept"#,
        ids,
        worker,
    )
    .fetch_all(db)
    .await
}

/// Puts a job back in the queue to run at `run_at`. `refund_attempt` is set when the run was
/// not the job's fault (rate limits, shutdown) and must not count against its retry budget.
pub async fn reschedule(
    db: impl PgExecutor<'_>,
    id: i64,
    worker: &str,
    run_at: DateTime<Utc>,
    error: Option<&str>,
    refund_attempt: bool,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', locked_by = NULL, locked_until = NULL, run_at = $3,
                  last_error = COALESCE($4, last_error),
                  attempts = CASE WHEN $5 THEN GREATEST(attempts - 1, 0) ELSE attempts END,
                  updated_at = now()
           WHERE id = $1 AND locked_by = $2 AND state = 'running'"#,
        id,
        worker,
        run_at,
        error,
        refund_attempt,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Dead-letters a job: it is kept for inspection and `outbox retry`, and no longer holds back
/// its ordering key.
pub async fn bury(db: impl PgExecutor<'_>, id: i64, worker: &str, error: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'dead', locked_by = NULL, locked_until = NULL, last_error = $3,
                  finished_at = now(), updated_at = now()
           WHERE id = $1 AND locked_by = $2 AND state = 'running'"#,
        id,
        worker,
        error,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Parks a job until something outside the queue calls [`unpark`] with the same tag.
pub async fn park(
    db: impl PgExecutor<'_>,
    id: i64,
    worker: &str,
    parked_on: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'parked', locked_by = NULL, locked_until = NULL,
                  parked_on = $3, last_error = $4,
                  attempts = GREATEST(attempts - 1, 0), updated_at = now()
           WHERE id = $1 AND locked_by = $2 AND state = 'running'"#,
        id,
        worker,
        parked_on,
        reason,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Re-queues every job parked on `parked_on`; returns how many.
pub async fn unpark(db: impl PgExecutor<'_>, parked_on: &str) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', parked_on = NULL, run_at = now(), updated_at = now()
           WHERE state = 'parked' AND parked_on = $1"#,
        parked_on,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// Releases some jobs (or every job) a stopping worker still holds, without charging an
/// attempt. Unlike the fetches by id, this tests `state = 'running'` plainly: releasing all of
/// a worker's jobs has no ids, and the partial index of running jobs is then its way in (behind
/// a `CASE` it would read the whole table, finished jobs included).
pub async fn release(db: impl PgExecutor<'_>, worker: &str, ids: Option<&[i64]>) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', locked_by = NULL, locked_until = NULL,
                  attempts = GREATEST(attempts - 1, 0), updated_at = now()
           WHERE state = 'running' AND locked_by = $1 AND ($2::bigint[] IS NULL OR id = ANY ($2))"#,
        worker,
        ids,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// When the next queued job scheduled for later falls due, if any. Jobs already due but not
/// claimed are waiting for an earlier job of their key, whose end wakes the workers.
pub async fn next_run_at(db: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT min(run_at) AS "next" FROM jobs WHERE state = 'queued' AND run_at > now()"#)
        .fetch_one(db)
        .await
}

/// A job as `outbox list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// Queue id.
    pub id: i64,
    /// Handler name.
    pub kind: String,
    /// queued, running, parked, dead or done.
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// Next attempt time.
    pub run_at: DateTime<Utc>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// What a parked job waits for.
    pub parked_on: Option<String>,
    /// Ordering key.
    pub ordering_key: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
}

/// Unfinished jobs (or only dead ones), oldest first.
pub async fn list(
    db: impl PgExecutor<'_>,
    dead_only: bool,
    limit: i64,
) -> Result<Vec<JobSummary>, sqlx::Error> {
    sqlx::query_as!(
        JobSummary,
        r#"SELECT id, kind, state, attempts, run_at, last_error, parked_on, ordering_key, created_at
           FROM jobs
           WHERE CASE WHEN $1 THEN state = 'dead' ELSE state <> 'done' END
           ORDER BY id
           LIMIT $2"#,
        dead_only,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Re-queues dead jobs (one id, or all when `id` is `None`) with a fresh retry budget.
pub async fn retry_dead(db: impl PgExecutor<'_>, id: Option<i64>) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE jobs SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
                  updated_at = now()
           WHERE state = 'dead' AND ($1::bigint IS NULL OR id = $1)"#,
        id,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// Queue depth and the age of the oldest waiting job, per state, for metrics.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    /// queued, running, parked or dead.
    pub state: String,
    /// Number of jobs.
    pub count: i64,
    /// Seconds since the oldest of them was enqueued.
    pub oldest_age_seconds: f64,
}

/// Depth per unfinished state, one row each.
pub async fn depth(db: impl PgExecutor<'_>) -> Result<Vec<QueueDepth>, sqlx::Error> {
    // One count per state, so that each reads only its state's partial index: done jobs are
    // kept a week and can be nearly all of the table, which `state <> 'done'` read whole every
    // time the gauges were refreshed.
    sqlx::query_as!(
        QueueDepth,
        r#"SELECT 'queued' AS "state!", count(*) AS "count!",
                  COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) AS "oldest_age_seconds!"
           FROM jobs WHERE state = 'queued'
           UNION ALL
           SELECT 'running', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
           FROM jobs WHERE state = 'running'
           UNION ALL
           SELECT 'parked', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
           FROM jobs WHERE state = 'parked'
           UNION ALL
           SELECT 'dead', count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
           FROM jobs WHERE state = 'dead'"#
    )
    .fetch_all(db)
    .await
}

/// Removes the dead row versions of the queue table (skipped when another process is at it).
pub async fn vacuum(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("VACUUM (SKIP_LOCKED) jobs").execute(db).await?;
    Ok(())
}

/// Looks at the `scan` oldest jobs after id `after` and deletes those done before `before`;
/// how many went, and the id to go on after (`None` once a job created at or after `before`
/// was met, or none was left). Ids follow creation, so the walk is along the primary key and
/// needs no index on the times, which every job would pay for.
pub async fn purge_done(
    db: impl PgExecutor<'_>,
    after: i64,
    before: chrono::DateTime<chrono::Utc>,
    scan: i64,
) -> Result<(u64, Option<i64>), sqlx::Error> {
    let step = sqlx::query!(
        r#"WITH oldest AS (
               SELECT id, state, created_at FROM jobs
               WHERE id > $1 ORDER BY id LIMIT $3
           ), gone AS (
               DELETE FROM jobs j USING oldest o
               WHERE j.id = o.id AND o.state = 'done' AND j.state = 'done' AND j.finished_at < $2
               RETURNING j.id
           )
           SELECT (SELECT count(*) FROM gone) AS "deleted!",
                  (SELECT max(id) FROM oldest) AS last,
                  (SELECT count(*) < $3 OR coalesce(bool_or(created_at >= $2), false) FROM oldest)
                      AS "reached_end!""#,
        after,
        before,
        scan,
    )
    .fetch_one(db)
    .await?;
    Ok((step.deleted as u64, step.last.filter(|_| !step.reached_end)))
}
