//! Marks succeeded jobs done in groups: every job that finishes while the previous group is
//! being written joins the next one, so a busy worker pays one statement and one commit for
//! many jobs instead of one each. An idle worker writes a group of one at once.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::store::jobs;

/// Most jobs marked done by one statement.
const GROUP: usize = 256;

/// Whether the job was still ours and is now done, or why that is not known.
pub type Completed = Result<bool, Arc<sqlx::Error>>;

type Request = (i64, oneshot::Sender<Completed>);

/// The handle workers complete jobs through; cheap to clone.
#[derive(Clone)]
pub struct Completions {
    requests: mpsc::UnboundedSender<Request>,
}

impl Completions {
    /// Starts the writer of `worker`'s completions; it stops once every handle is dropped,
    /// after writing what it was given.
    pub fn spawn(db: PgPool, worker: String, tracker: &TaskTracker) -> Self {
        let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
        tracker.spawn(async move {
            let mut group = Vec::with_capacity(GROUP);
            while incoming.recv_many(&mut group, GROUP).await > 0 {
                write(&db, &worker, std::mem::take(&mut group)).await;
            }
        });
        Self { requests }
    }

    /// Marks job `id` done if `worker` (this handle's) still holds its lease; true when it did.
    pub async fn complete(&self, id: i64) -> Completed {
        let (reply, answer) = oneshot::channel();
        if self.requests.send((id, reply)).is_err() {
            return Err(Arc::new(sqlx::Error::PoolClosed));
        }
        answer.await.unwrap_or(Err(Arc::new(sqlx::Error::PoolClosed)))
    }
}

async fn write(db: &PgPool, worker: &str, group: Vec<Request>) {
    let ids: Vec<i64> = group.iter().map(|(id, _)| *id).collect();
    // A lone job takes the single-id statement: PostgreSQL plans the array form anew at every
    // call (its generic plan assumes ten ids), which cost as much as running it.
    let done = match ids[..] {
        [id] => jobs::complete(db, id, worker)
            .await
            .map(|done| if done { vec![id] } else { Vec::new() }),
        _ => jobs::complete_many(db, &ids, worker).await,
    };
    match done {
        Ok(done) => {
            let done: HashSet<i64> = done.into_iter().collect();
            for (id, reply) in group {
                let _ = reply.send(Ok(done.contains(&id)));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for (_, reply) in group {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
