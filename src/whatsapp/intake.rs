//! Group commit of webhook bodies. Each stored body used to cost a commit of its own, and so a
//! WAL flush; the flush, not the insert, bounded how many webhooks a second the service could
//! acknowledge. Handlers now hand their body to the inbox and wait; a few writers take whatever
//! has queued up and store it with one statement, and every handler of that batch is answered
//! once it is committed. Nothing waits on a timer: while one batch is being committed the next
//! gathers by itself, so a lone webhook is stored at once and a busy second shares its flushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::webhook_events;

/// Batches that may be committing at once: a slow commit does not hold back the bodies queued
/// behind it, and the pool keeps its other connections for the ingest loop and the jobs.
const WRITERS: usize = 4;

/// Most bodies one statement stores.
const BATCH_BODIES: usize = 256;

/// A batch takes no further body once it holds this many bytes (one body may reach 3 MB).
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Bodies queued for the writers. Past this, handlers wait for room: posters slow down rather
/// than the queue growing without bound.
const QUEUE: usize = WRITERS * BATCH_BODIES;

/// A batch's outcome for one of its bodies; the error is shared by every body of the batch.
type Stored = Result<i64, Arc<sqlx::Error>>;

/// A body and the handler waiting for it to be committed.
struct Handoff {
    body: Bytes,
    reply: oneshot::Sender<Stored>,
}

/// The door of the webhook inbox (`webhook_events`); cheap to clone.
#[derive(Clone)]
pub struct WebhookInbox {
    queue: mpsc::Sender<Handoff>,
    committed: Arc<AtomicU64>,
    closing: CancellationToken,
    writers: TaskTracker,
}

impl WebhookInbox {
    /// Starts the writers on `db`; must be called within a Tokio runtime.
    pub fn new(db: PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let closing = CancellationToken::new();
        let committed = Arc::new(AtomicU64::new(0));
        let writers = TaskTracker::new();
        for _ in 0..WRITERS {
            writers.spawn(write(
                db.clone(),
                receiver.clone(),
                closing.clone(),
                committed.clone(),
            ));
        }
        writers.close();
        Self {
            queue,
            committed,
            closing,
            writers,
        }
    }

    /// Stores `body` together with whatever else is waiting, and returns its inbox id once that
    /// batch is committed. A failed batch fails each of its bodies with the batch's error; once
    /// the inbox is closed, bodies are refused as by a closed pool.
    pub async fn store(&self, body: Bytes) -> Result<i64, Arc<sqlx::Error>> {
        let (reply, stored) = oneshot::channel();
        self.queue
            .send(Handoff { body, reply })
            .await
            .map_err(|_| closed())?;
        stored.await.map_err(|_| closed())?
    }

    /// How many bodies this process has committed since it started: the ingest loop reads it
    /// at each batch to tell whether the inbox fills faster than it is worked through.
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Refuses further bodies, and returns once the writers have committed, and answered, every
    /// body handed over before.
    pub async fn close(&self) {
        self.closing.cancel();
        self.writers.wait().await;
    }
}

fn closed() -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::PoolClosed)
}

/// One writer: takes a batch, commits it, answers it, until the inbox is closed and empty.
async fn write(
    db: PgPool,
    queue: Arc<Mutex<mpsc::Receiver<Handoff>>>,
    closing: CancellationToken,
    committed: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH_BODIES);
    while take(&queue, &closing, &mut batch).await {
        let bodies: Vec<&[u8]> = batch.iter().map(|handoff| &handoff.body[..]).collect();
        let result = webhook_events::insert_many(&db, &bodies).await;
        drop(bodies);
        metrics::histogram!("webhook_batch_bodies").record(batch.len() as f64);
        // A handler that is gone (its client hung up) finds its body stored all the same, as
        // when a single insert outlived its request.
        match result {
            Ok(ids) => {
                committed.fetch_add(ids.len() as u64, Ordering::Relaxed);
                for (handoff, id) in batch.drain(..).zip(ids) {
                    let _ = handoff.reply.send(Ok(id));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for handoff in batch.drain(..) {
                    let _ = handoff.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Waits for a body, then adds what else is queued, up to the batch limits. False once the
/// inbox is closed and nothing is left in it.
async fn take(
    queue: &Mutex<mpsc::Receiver<Handoff>>,
    closing: &CancellationToken,
    batch: &mut Vec<Handoff>,
) -> bool {
    // One writer at a time gathers; the others are committing or next in line.
    let mut queue = queue.lock().await;
    let first = tokio::select! {
        biased;
        handoff = queue.recv() => handoff,
        () = closing.cancelled() => {
            // Closing the receiver refuses new bodies and keeps the queued ones for us.
            queue.close();
            queue.recv().await
        }
    };
    let Some(first) = first else {
        return false;
    };
    let mut bytes = first.body.len();
    batch.push(first);
    while batch.len() < BATCH_BODIES && bytes < BATCH_BYTES {
        let Ok(handoff) = queue.try_recv() else {
            break;
        };
        bytes += handoff.body.len();
        batch.push(handoff);
    }
    true
}
