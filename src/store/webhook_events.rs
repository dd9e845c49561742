//! The raw webhook inbox: bodies as Meta signed them, committed before Meta gets its 200 and
//! processed afterwards.

use sqlx::{PgConnection, PgExecutor};

/// A stored, not yet processed webhook body.
#[derive(Debug)]
pub struct PendingEvent {
    /// Inbox id (arrival order).
    pub id: i64,
    /// The body exactly as received.
    pub body: Vec<u8>,
    /// When it arrived.
    pub received_at: chrono::DateTime<chrono::Utc>,
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

/// Advisory lock key of the inbox ("pw-ingst").
const INBOX_LOCK: i64 = 0x7077_2d69_6e67_7374;

/// Waits until no other process is working through the inbox, then holds it for the rest of the
/// caller's transaction. Replicas taking interleaved batches side by side could store a
/// conversation's later message before its earlier one, and the later delivery would overtake;
/// one batch at a time keeps arrival order across replicas.
pub async fn lock_inbox(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT true AS "locked!" FROM pg_advisory_xact_lock($1)"#,
        INBOX_LOCK
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Locks up to `limit` pending events for processing in the caller's transaction; events
/// another process is working on are skipped.
pub async fn lock_pending(conn: &mut PgConnection, limit: i64) -> Result<Vec<PendingEvent>, sqlx::Error> {
    sqlx::query_as!(
        PendingEvent,
        r#"SELECT id, body, received_at FROM webhook_events WHERE state = 'pending'
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"#,
        limit,
    )
    .fetch_all(conn)
    .await
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

/// How each event of a batch ended, for [`finish_all`].
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
    /// Adds one event.
    pub fn push(&mut self, id: i64, state: &str, note: Option<String>) {
        self.ids.push(id);
        self.states.push(state.to_string());
        self.notes.push(note);
    }
}

/// Records how a batch of events ended, in one statement.
pub async fn finish_all(conn: &mut PgConnection, finished: &Finished) -> Result<(), sqlx::Error> {
    // A lone event takes the single-id statement: PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten events), which costs more than running it.
    if let ([id], [state], [note]) = (&finished.ids[..], &finished.states[..], &finished.notes[..]) {
        return finish(conn, *id, state, note.as_deref()).await;
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
