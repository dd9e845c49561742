//! The raw webhook inbox: bodies as Meta signed them, committed before Meta gets its 200 and
//! processed afterwards.

use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, Transaction};

/// A stored, not yet processed webhook body.
#[derive(Debug)]
pub struct PendingEvent {
    /// Inbox id (arrival order).
    pub id: i64,
    /// The body exactly as received.
    pub body: Vec<u8>,
    /// When it arrived.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Seconds it had waited when it was taken, by the database's clock (as `received_at`), so
    /// that a skewed clock here cannot make it look late or early. Read when it is taken, not
    /// at the transaction's start: the transaction may have waited for another replica's hold
    /// on the inbox, and everything that arrived meanwhile would look fresh.
    pub waited_seconds: f64,
}

/// Stores verified bodies with one statement, so that a single commit (one WAL flush) covers
/// them all; returns their ids in the order of `bodies`.
pub async fn insert_many(db: impl PgExecutor<'_>, bodies: &[&[u8]]) -> Result<Vec<i64>, sqlx::Error> {
    // Rows are inserted in the order given, so ids follow arrival order, which the ingest loop
    // keeps; RETURNING promises no order, hence the sort.
    let mut ids = sqlx::query_scalar!(
        r#"INSERT INTO webhook_events (body)
           SELECT body FROM unnest($1::bytea[]) WITH ORDINALITY AS arrival (body, position)
           ORDER BY position
           RETURNING id"#,
        // The macro expects owned bodies; borrowed ones encode as the same bytea[].
        bodies as &[&[u8]],
    )
    .fetch_all(db)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

/// Opens a transaction that holds the inbox: waits until no other process is working through
/// it, then keeps it until the transaction ends. Replicas taking interleaved batches side by
/// side could store a conversation's later message before its earlier one, and the later
/// delivery would overtake; one batch at a time keeps arrival order across replicas. The lock
/// rides on the `BEGIN`, in one round trip instead of two: every batch pays it, and a message
/// waits for one batch before it and for its own. A lock that fails leaves the transaction
/// aborted, which sqlx reports as a failed `BEGIN`.
pub async fn begin_holding_inbox(db: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    // The key spells "pw-ingst" (0x7077_2d69_6e67_7374).
    db.begin_with("BEGIN; SELECT pg_advisory_xact_lock(8103995985323586420)")
        .await
}

/// What [`take_pending`] marks the events it takes: how most of them end.
const TAKEN: &str = "processed";

/// Locks up to `limit` pending events, oldest first, for processing in the caller's
/// transaction, and marks them `processed` as most of them end: a batch then needs no second
/// statement to record its outcome, only [`finish_all`] for the events that end otherwise.
/// Events another process is working on are skipped.
pub async fn take_pending(conn: &mut PgConnection, limit: i64) -> Result<Vec<PendingEvent>, sqlx::Error> {
    let mut events = sqlx::query_as!(
        PendingEvent,
        r#"UPDATE webhook_events SET state = $2, note = NULL, processed_at = now()
           WHERE id IN (SELECT id FROM webhook_events WHERE state = 'pending'
                        ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
           RETURNING id, body, received_at,
                     EXTRACT(EPOCH FROM clock_timestamp() - received_at)::float8 AS "waited_seconds!""#,
        limit,
        TAKEN,
    )
    .fetch_all(conn)
    .await?;
    // RETURNING promises no order; events are processed in arrival order.
    events.sort_unstable_by_key(|event| event.id);
    Ok(events)
}

/// Records how processing ended: `processed`, `parked` (for an unknown number) or `failed`.
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    state: &str,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE webhook_events SET state = $2, note = $3, processed_at = now() WHERE id = $1"#,
        id,
        state,
        note,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// How the events of a batch ended where it differs from how [`take_pending`] marked them, for
/// [`finish_all`].
#[derive(Debug, Default)]
pub struct Finished {
    /// Inbox ids.
    pub ids: Vec<i64>,
    /// `processed`, `parked` or `failed`, per id.
    pub states: Vec<String>,
    /// Notes, per id.
    pub notes: Vec<Option<String>>,
}

impl Finished {
    /// Adds one event, unless it ended as [`take_pending`] marked it.
    pub fn push(&mut self, id: i64, state: &str, note: Option<String>) {
        if state == TAKEN && note.is_none() {
            return;
        }
        self.ids.push(id);
        self.states.push(state.to_string());
        self.notes.push(note);
    }
}

/// Records how the events of `finished` ended, in one statement; none when it is empty.
pub async fn finish_all(conn: &mut PgConnection, finished: &Finished) -> Result<(), sqlx::Error> {
    // A lone event takes the single-id statement: PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten events), which costs more than running it.
    match (&finished.ids[..], &finished.states[..], &finished.notes[..]) {
        ([], ..) => return Ok(()),
        ([id], [state], [note]) => return finish(conn, *id, state, note.as_deref()).await,
        _ => {}
    }
    sqlx::query!(
        r#"UPDATE webhook_events e SET state = f.state, note = f.note, processed_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[]) AS f(id, state, note)
           WHERE e.id = f.id"#,
        &finished.ids,
        &finished.states,
        &finished.notes as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts parked and failed events back to pending (after a number was added or a fix deployed);
/// processing is idempotent, so replays change nothing already applied.
pub async fn requeue(db: impl PgExecutor<'_>, state: &str) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE webhook_events SET state = 'pending', processed_at = NULL WHERE state = $1"#,
        state,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// Webhook bodies a purge deleted, by the state they were in.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Processed ones.
    pub processed: u64,
    /// Ones parked for a number not served.
    pub parked: u64,
}

impl std::ops::AddAssign for Purged {
    fn add_assign(&mut self, other: Self) {
        self.processed += other.processed;
        self.parked += other.parked;
    }
}

/// Looks at the `scan` oldest webhooks after inbox id `after` and deletes those processed and
/// received before `processed_before`, and those parked and received before `parked_before`;
/// failed ones stay for `webhooks replay`. What went, and the inbox id to go on after (`None`
/// once a webhook received at or after `processed_before` was met, or none was left). Ids
/// follow arrival, so the walk is along the primary key, from the oldest, and stops at the
/// first webhook too recent to go: no index on the times, which every webhook would pay for.
pub async fn purge_expired(
    db: impl PgExecutor<'_>,
    after: i64,
    processed_before: chrono::DateTime<chrono::Utc>,
    parked_before: chrono::DateTime<chrono::Utc>,
    scan: i64,
) -> Result<(Purged, Option<i64>), sqlx::Error> {
    // The state is checked on the row deleted as well as on the one looked at, so a webhook
    // requeued meanwhile is not deleted.
    let step = sqlx::query!(
        r#"WITH oldest AS (
               SELECT id, state, received_at FROM webhook_events
               WHERE id > $1 ORDER BY id LIMIT $4
           ), gone AS (
               DELETE FROM webhook_events w USING oldest o
               WHERE w.id = o.id AND w.state = o.state
                 AND ((o.state = 'processed' AND o.received_at < $2)
                      OR (o.state = 'parked' AND o.received_at < $3))
               RETURNING w.state
           )
           SELECT (SELECT count(*) FROM gone WHERE state = 'processed') AS "processed!",
                  (SELECT count(*) FROM gone WHERE state = 'parked') AS "parked!",
                  (SELECT max(id) FROM oldest) AS last,
                  (SELECT count(*) < $4 OR coalesce(bool_or(received_at >= $2), false) FROM oldest)
                      AS "reached_end!""#,
        after,
        processed_before,
        parked_before,
        scan,
    )
    .fetch_one(db)
    .await?;
    let purged = Purged {
        processed: step.processed as u64,
        parked: step.parked as u64,
    };
    Ok((purged, step.last.filter(|_| !step.reached_end)))
}
