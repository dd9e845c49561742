//! The durable job queue against real PostgreSQL: ordering, retries, dead letters, parking,
//! crashed workers, competing processes and shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use pipedrive_whatsapp::queue::{self, Handler, Job, JobError, NewJob, ReadAhead, Registry, WorkerConfig};
use pipedrive_whatsapp::store;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::helpers::{eventually, fast_workers, fresh_database};

async fn migrated_db() -> PgPool {
    let db = PgPool::connect(&fresh_database().await).await.unwrap();
    store::migrate(&db).await.unwrap();
    db
}

type Log = Arc<Mutex<Vec<(i64, i64)>>>;

/// Records `(key, seq)` of each job it runs, after a short random pause.
struct Recorder(Log);

impl Handler for Recorder {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let key = job.payload["key"].as_i64().unwrap();
            let seq = job.payload["seq"].as_i64().unwrap();
            let [pause] = pipedrive_whatsapp::crypto::random_bytes::<1>();
            tokio::time::sleep(Duration::from_micros(u64::from(pause) * 20)).await;
            self.0.lock().unwrap().push((key, seq));
            Ok(())
        })
    }
}

/// Fails with `error` until `succeed` is set.
struct Gate {
    succeed: Arc<AtomicBool>,
    error: fn() -> JobError,
    runs: Arc<AtomicUsize>,
}

impl Handler for Gate {
    fn run<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.succeed.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err((self.error)())
            }
        })
    }
}

struct Workers {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Workers {
    fn start(db: &PgPool, registry: Registry, config: WorkerConfig) -> Self {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        queue::spawn(db.clone(), registry, config, shutdown.clone(), &tasks);
        Self { shutdown, tasks }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(20), self.tasks.wait())
            .await
            .expect("workers stop");
    }
}

/// Enqueues `job`, with a dedup key of its own if it has none: only a job with a dedup key is
/// kept once it succeeded (as `done`, with its attempts), and these tests read finished jobs.
async fn enqueue(db: &PgPool, job: NewJob) -> Option<i64> {
    let job = match job.dedup_key {
        Some(_) => job,
        None => job.dedup(format!("test:{}", uuid::Uuid::now_v7())),
    };
    let mut conn = db.acquire().await.unwrap();
    queue::enqueue(&mut conn, job).await.unwrap()
}

async fn count(db: &PgPool, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = $1")
        .bind(state)
        .fetch_one(db)
        .await
        .unwrap()
}

async fn wait_for(db: &PgPool, state: &str, n: i64) {
    eventually(Duration::from_secs(20), || async {
        (count(db, state).await == n).then_some(())
    })
    .await;
}

async fn job_row(db: &PgPool, id: i64) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

fn assert_in_order_and_once(log: &[(i64, i64)], keys: i64, per_key: i64) {
    assert_eq!(log.len() as i64, keys * per_key, "every job ran exactly once");
    for key in 0..keys {
        let seqs: Vec<i64> = log.iter().filter(|(k, _)| *k == key).map(|(_, s)| *s).collect();
        assert_eq!(seqs, (0..per_key).collect::<Vec<_>>(), "key {key} ran in order");
    }
}

async fn enqueue_ordered(db: &PgPool, keys: i64, per_key: i64) {
    for seq in 0..per_key {
        for key in 0..keys {
            enqueue(
                db,
                NewJob::new("record", &json!({"key": key, "seq": seq})).ordered_by(format!("k{key}")),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn jobs_of_one_ordering_key_run_once_and_in_order() {
    let db = migrated_db().await;
    enqueue_ordered(&db, 5, 20).await;
    let log: Log = Arc::default();
    let mut registry = Registry::new();
    registry.register("record", Recorder(log.clone()));
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "done", 100).await;
    workers.stop().await;
    assert_in_order_and_once(&log.lock().unwrap(), 5, 20);
}

#[tokio::test]
async fn two_processes_on_one_database_run_each_job_once() {
    let db = migrated_db().await;
    enqueue_ordered(&db, 10, 30).await;
    let log: Log = Arc::default();
    let mut registry = Registry::new();
    registry.register("record", Recorder(log.clone()));
    let a = Workers::start(&db, registry.clone(), fast_workers());
    let b = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "done", 300).await;
    a.stop().await;
    b.stop().await;
    assert_in_order_and_once(&log.lock().unwrap(), 10, 30);
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let db = migrated_db().await;
    let succeed = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(
        "flaky",
        Gate {
            succeed: succeed.clone(),
            error: || JobError::retry("upstream 503"),
            runs: runs.clone(),
        },
    );
    let id = enqueue(&db, NewJob::new("flaky", &json!({}))).await.unwrap();
    let workers = Workers::start(&db, registry, fast_workers());
    eventually(Duration::from_secs(10), || async {
        (runs.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    succeed.store(true, Ordering::SeqCst);
    wait_for(&db, "done", 1).await;
    workers.stop().await;
    let (state, attempts, last_error) = job_row(&db, id).await;
    assert_eq!(state, "done");
    assert!(attempts >= 4, "{attempts}");
    assert_eq!(last_error, None);
}

#[tokio::test]
async fn exhausted_retries_dead_letter_the_job_and_retry_dead_revives_it() {
    let db = migrated_db().await;
    let succeed = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(
        "doomed",
        Gate {
            succeed: succeed.clone(),
            error: || JobError::retry("still down"),
            runs: runs.clone(),
        },
    );
    let id = enqueue(&db, NewJob::new("doomed", &json!({}))).await.unwrap();
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "dead", 1).await;
    let (_, attempts, last_error) = job_row(&db, id).await;
    assert_eq!(attempts, fast_workers().retry.max_attempts);
    assert_eq!(last_error.as_deref(), Some("still down"));
    assert_eq!(runs.load(Ordering::SeqCst) as i32, attempts);

    let listed = store::jobs::list(&db, true, 10).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    succeed.store(true, Ordering::SeqCst);
    assert_eq!(store::jobs::retry_dead(&db, Some(id)).await.unwrap(), 1);
    wait_for(&db, "done", 1).await;
    workers.stop().await;
}

#[tokio::test]
async fn permanent_failures_and_unknown_kinds_are_dead_at_once() {
    let db = migrated_db().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry.register(
        "invalid",
        Gate {
            succeed: Arc::new(AtomicBool::new(false)),
            error: || JobError::permanent("400 invalid body"),
            runs: runs.clone(),
        },
    );
    let invalid = enqueue(&db, NewJob::new("invalid", &json!({}))).await.unwrap();
    let unknown = enqueue(&db, NewJob::new("no-such-kind", &json!({})))
        .await
        .unwrap();
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "dead", 2).await;
    workers.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(job_row(&db, invalid).await.2.as_deref(), Some("400 invalid body"));
    assert!(job_row(&db, unknown).await.2.unwrap().contains("no handler"));
}

#[tokio::test]
async fn a_parked_job_holds_back_its_successors_until_unparked() {
    let db = migrated_db().await;
    let open = Arc::new(AtomicBool::new(false));
    let log: Log = Arc::default();

    struct Waiter {
        open: Arc<AtomicBool>,
        log: Log,
    }
    impl Handler for Waiter {
        fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
            Box::pin(async move {
                if !self.open.load(Ordering::SeqCst) {
                    return Err(JobError::Park {
                        on: "installation:x".into(),
                        reason: "needs re-authorisation".into(),
                    });
                }
                self.log
                    .lock()
                    .unwrap()
                    .push((0, job.payload["seq"].as_i64().unwrap()));
                Ok(())
            })
        }
    }
    let mut registry = Registry::new();
    registry.register(
        "deliver",
        Waiter {
            open: open.clone(),
            log: log.clone(),
        },
    );
    for seq in 0..3 {
        enqueue(
            &db,
            NewJob::new("deliver", &json!({"seq": seq})).ordered_by("conversation-1"),
        )
        .await;
    }
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "parked", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&db, "parked").await,
        1,
        "successors wait behind the parked job"
    );
    assert_eq!(count(&db, "queued").await, 2);
    let (_, attempts, _) = job_row(&db, 1).await;
    assert_eq!(attempts, 0, "parking does not spend attempts");

    open.store(true, Ordering::SeqCst);
    assert_eq!(queue::unpark(&db, "installation:x").await.unwrap(), 1);
    wait_for(&db, "done", 3).await;
    workers.stop().await;
    assert_eq!(*log.lock().unwrap(), [(0, 0), (0, 1), (0, 2)]);
}

#[tokio::test]
async fn a_crashed_workers_job_is_claimed_again_when_its_lease_runs_out() {
    let db = migrated_db().await;
    let id = enqueue(&db, NewJob::new("record", &json!({"key": 0, "seq": 0})))
        .await
        .unwrap();
    // A worker that claimed the job and died (kill -9): its lease has expired.
    sqlx::query(
        "UPDATE jobs SET state = 'running', locked_by = 'ghost', attempts = 1,
                locked_until = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(&db)
    .await
    .unwrap();
    let log: Log = Arc::default();
    let mut registry = Registry::new();
    registry.register("record", Recorder(log.clone()));
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "done", 1).await;
    workers.stop().await;
    assert_eq!(*log.lock().unwrap(), [(0, 0)]);
    assert_eq!(job_row(&db, id).await.1, 2);
}

#[tokio::test]
async fn a_live_lease_is_never_claimed_twice() {
    let db = migrated_db().await;
    let id = enqueue(&db, NewJob::new("record", &json!({}))).await.unwrap();
    let first = store::jobs::claim(&db, "a", 10, 60.0).await.unwrap();
    let second = store::jobs::claim(&db, "b", 10, 60.0).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    assert!(second.is_empty());
    assert!(
        !store::jobs::complete(&db, id, "b").await.unwrap(),
        "only the lease holder settles"
    );
    assert!(store::jobs::complete(&db, id, "a").await.unwrap());
}

#[tokio::test]
async fn deferred_jobs_do_not_spend_attempts() {
    let db = migrated_db().await;
    let deferred = Arc::new(AtomicBool::new(false));

    struct DeferOnce(Arc<AtomicBool>);
    impl Handler for DeferOnce {
        fn run<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
            Box::pin(async move {
                if self.0.swap(true, Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err(JobError::Defer {
                        reason: "429 from Pipedrive".into(),
                        after: Duration::from_millis(200),
                    })
                }
            })
        }
    }
    let mut registry = Registry::new();
    registry.register("limited", DeferOnce(deferred));
    let id = enqueue(&db, NewJob::new("limited", &json!({}))).await.unwrap();
    let started = std::time::Instant::now();
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "done", 1).await;
    workers.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited the requested time"
    );
    assert_eq!(job_row(&db, id).await.1, 1);
}

#[tokio::test]
async fn dedup_keys_insert_a_job_once() {
    let db = migrated_db().await;
    let first = enqueue(&db, NewJob::new("record", &json!({})).dedup("message:1")).await;
    let second = enqueue(&db, NewJob::new("record", &json!({})).dedup("message:1")).await;
    assert!(first.is_some());
    assert_eq!(second, None);
}

#[tokio::test]
async fn a_succeeded_job_leaves_no_row_unless_its_dedup_key_must_keep_holding() {
    let db = migrated_db().await;
    let mut conn = db.acquire().await.unwrap();
    let plain = queue::enqueue(&mut conn, NewJob::new("record", &json!({"key": 0, "seq": 0})))
        .await
        .unwrap()
        .unwrap();
    let keyed = NewJob::new("record", &json!({"key": 1, "seq": 0})).dedup("message:2");
    let keyed = queue::enqueue(&mut conn, keyed).await.unwrap().unwrap();
    drop(conn);
    let log = Log::default();
    let mut registry = Registry::new();
    registry.register("record", Recorder(log.clone()));
    let workers = Workers::start(&db, registry, fast_workers());
    // Job `plain` is gone, `keyed` is done.
    let settled = vec![(keyed, "done".to_string())];
    eventually(Duration::from_secs(20), || async {
        let left: Vec<(i64, String)> = sqlx::query_as("SELECT id, state FROM jobs ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
        (left == settled).then_some(())
    })
    .await;
    workers.stop().await;
    assert_eq!(log.lock().unwrap().len(), 2, "both ran (job {plain} among them)");
    let again = NewJob::new("record", &json!({"key": 1, "seq": 1})).dedup("message:2");
    assert_eq!(
        enqueue(&db, again).await,
        None,
        "the done job still holds its key"
    );
}

#[tokio::test]
async fn shutdown_releases_unfinished_jobs_without_spending_an_attempt() {
    let db = migrated_db().await;
    struct Forever;
    impl Handler for Forever {
        fn run<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
            Box::pin(std::future::pending())
        }
    }
    let mut registry = Registry::new();
    registry.register("forever", Forever);
    let id = enqueue(&db, NewJob::new("forever", &json!({}))).await.unwrap();
    let config = WorkerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..fast_workers()
    };
    let workers = Workers::start(&db, registry, config);
    wait_for(&db, "running", 1).await;
    workers.stop().await;
    let (state, attempts, _) = job_row(&db, id).await;
    assert_eq!((state.as_str(), attempts), ("queued", 0));
}

/// A [`Recorder`] whose first run of `seq` 4 fails.
struct FailsOnceAtFour {
    recorder: Recorder,
    failed: AtomicBool,
}

impl Handler for FailsOnceAtFour {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        if job.payload["seq"] == 4 && !self.failed.swap(true, Ordering::SeqCst) {
            return Box::pin(async { Err(JobError::retry("first try of 4 fails")) });
        }
        self.recorder.run(job)
    }
}

#[tokio::test]
async fn a_failure_in_a_run_of_one_key_hands_back_the_jobs_behind_it_untouched() {
    // A worker runs the jobs queued behind a key's head in the same task; when one of them
    // fails, those behind it go back to the queue without spending an attempt and still run
    // after it.
    let db = migrated_db().await;
    enqueue_ordered(&db, 1, 12).await;
    let log: Log = Arc::default();
    let mut registry = Registry::new();
    registry.register(
        "record",
        FailsOnceAtFour {
            recorder: Recorder(log.clone()),
            failed: AtomicBool::new(false),
        },
    );
    let workers = Workers::start(&db, registry, fast_workers());
    wait_for(&db, "done", 12).await;
    workers.stop().await;
    assert_in_order_and_once(&log.lock().unwrap(), 1, 12);
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM jobs ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    let expected: Vec<i32> = (0..12).map(|seq| if seq == 4 { 2 } else { 1 }).collect();
    assert_eq!(attempts, expected);
}

/// `(seq, what its run got read ahead)` of each job run.
type ReadLog = Arc<Mutex<Vec<(i64, Option<i64>)>>>;

/// A [`Recorder`] that reads each job's `seq` ahead and notes what each run got.
struct ReadsAhead {
    recorder: Recorder,
    got: ReadLog,
}

impl Handler for ReadsAhead {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        self.run_read_ahead(job, None)
    }

    fn read_ahead<'a>(&'a self, jobs: &'a [&'a Job]) -> BoxFuture<'a, HashMap<i64, ReadAhead>> {
        Box::pin(async move {
            jobs.iter()
                .map(|job| {
                    (
                        job.id,
                        Box::new(job.payload["seq"].as_i64().unwrap()) as ReadAhead,
                    )
                })
                .collect()
        })
    }

    fn run_read_ahead<'a>(
        &'a self,
        job: &'a Job,
        ahead: Option<ReadAhead>,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        let seq = job.payload["seq"].as_i64().unwrap();
        let read = ahead.map(|ahead| *ahead.downcast::<i64>().unwrap());
        self.got.lock().unwrap().push((seq, read));
        self.recorder.run(job)
    }
}

/// Runs the `n` queued `record` jobs with a [`ReadsAhead`] handler; the `(key, seq)` of each job
/// run, and the `(seq, what was read ahead)` of each, in the order they ran.
async fn run_reading_ahead(db: &PgPool, n: i64) -> (Vec<(i64, i64)>, Vec<(i64, Option<i64>)>) {
    let log: Log = Arc::default();
    let got: ReadLog = Arc::default();
    let mut registry = Registry::new();
    registry.register(
        "record",
        ReadsAhead {
            recorder: Recorder(log.clone()),
            got: Arc::clone(&got),
        },
    );
    let workers = Workers::start(db, registry, fast_workers());
    wait_for(db, "done", n).await;
    workers.stop().await;
    let log = log.lock().unwrap().clone();
    let got = got.lock().unwrap().clone();
    (log, got)
}

#[tokio::test]
async fn jobs_run_in_a_row_get_what_was_read_ahead_for_them() {
    // The head of a key is claimed alone; the jobs behind it are claimed together when it
    // succeeds, read ahead in one go, and each gets its own read.
    let db = migrated_db().await;
    enqueue_ordered(&db, 1, 12).await;
    let (log, got) = run_reading_ahead(&db, 12).await;
    assert_in_order_and_once(&log, 1, 12);
    assert_eq!(got[0], (0, None), "the head reads for itself");
    for &(seq, read) in &got[1..] {
        assert_eq!(read, Some(seq), "job {seq} got its own read ahead");
    }
}

#[tokio::test]
async fn jobs_claimed_together_are_read_ahead_in_one_go() {
    // As many heads of keys as there are workers: one claim takes them all, and what they
    // need is read for all of them before they run, each getting its own.
    let db = migrated_db().await;
    let workers_at_once = fast_workers().concurrency as i64;
    for key in 0..workers_at_once {
        enqueue(
            &db,
            NewJob::new("record", &json!({"key": key, "seq": key})).ordered_by(format!("k{key}")),
        )
        .await;
    }
    let (_, mut got) = run_reading_ahead(&db, workers_at_once).await;
    got.sort_unstable();
    let expected: Vec<(i64, Option<i64>)> = (0..workers_at_once).map(|seq| (seq, Some(seq))).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn done_jobs_go_a_week_after_they_finished_and_the_rest_stay() {
    let db = migrated_db().await;
    // Oldest first: a dead job, three done ones, one done job retried until two days ago,
    // and one done today.
    let rows = [
        ("dead", 9, None),
        ("done", 9, Some(9)),
        ("done", 9, Some(8)),
        ("done", 8, Some(8)),
        ("done", 8, Some(2)),
        ("done", 0, Some(0)),
    ];
    for (n, (state, created, finished)) in rows.into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO jobs (kind, payload, dedup_key, state, created_at, finished_at)
             VALUES ('noop', '{}', $1, $2, now() - make_interval(days => $3),
                     now() - make_interval(days => $4))",
        )
        .bind(format!("key-{n}"))
        .bind(state)
        .bind(created)
        .bind(finished)
        .execute(&db)
        .await
        .unwrap();
    }

    // Two looked at per statement, resting between them: the walk steps over the dead job
    // and the one finished two days ago, and stops at today's.
    let pace = pipedrive_whatsapp::purge::Pace { scan: 2, rest: 1 };
    let before = chrono::Utc::now() - queue::retention::KEEP;
    let running = CancellationToken::new();
    let deleted = queue::retention::purge(&db, before, pace, &running)
        .await
        .unwrap();
    assert_eq!(deleted, 3);
    let left: Vec<String> = sqlx::query_scalar("SELECT dedup_key FROM jobs ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(left, ["key-0", "key-4", "key-5"]);
    assert_eq!(
        queue::retention::purge(&db, before, pace, &running)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn the_queue_depth_counts_each_unfinished_state_and_leaves_done_jobs_out() {
    let db = migrated_db().await;
    // State, how many, and how many minutes ago the oldest of them was created.
    let rows = [
        ("queued", 3, 5),
        ("running", 2, 1),
        ("dead", 1, 60),
        ("done", 4, 600),
    ];
    for (state, n, minutes) in rows {
        sqlx::query(
            "INSERT INTO jobs (kind, payload, state, created_at)
             SELECT 'noop', '{}', $1, now() - make_interval(mins => $2 - g + 1)
             FROM generate_series(1, $3) AS g",
        )
        .bind(state)
        .bind(minutes)
        .bind(n)
        .execute(&db)
        .await
        .unwrap();
    }

    let depth = store::jobs::depth(&db).await.unwrap();
    let mut found: Vec<(&str, i64, i64)> = depth
        .iter()
        .map(|d| {
            (
                d.state.as_str(),
                d.count,
                (d.oldest_age_seconds / 60.0).round() as i64,
            )
        })
        .collect();
    found.sort_unstable();
    assert_eq!(
        found,
        [
            ("dead", 1, 60),
            ("parked", 0, 0),
            ("queued", 3, 5),
            ("running", 2, 1)
        ]
    );
}
