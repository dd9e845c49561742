//! The durable job queue: every outbound call that can fail (Pipedrive deliveries, WhatsApp
//! sends, media downloads) is a row in `jobs`, claimed with `FOR UPDATE SKIP LOCKED` under a
//! lease, retried with exponential backoff and jitter, and dead-lettered when its budget is spent.
//!
//! Jobs run at least once: a worker that dies mid-job loses its lease and the job runs again,
//! so handlers must be idempotent (keyed by our message ids).

mod completions;
pub mod retention;
mod retry;
mod worker;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

pub use retry::RetryPolicy;
pub use worker::{Dispatch, Lease, WorkerConfig, run_inline, spawn};

pub use crate::store::jobs::{Job, NewJob, enqueue, unpark};

/// How a job run ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A transient failure: try again after the backoff (and no sooner than `after`).
    #[error("{error}")]
    Retry {
        /// What went wrong, for `last_error` and the log.
        error: String,
        /// A minimum delay the other side asked for (Retry-After).
        after: Option<Duration>,
    },
    /// Not a failure of the job (a rate limit): run again after `after` without spending an
    /// attempt.
    #[error("deferred: {reason}")]
    Defer {
        /// Why.
        reason: String,
        /// How long to wait.
        after: Duration,
    },
    /// Retrying cannot help: dead-letter the job.
    #[error("{0}")]
    Permanent(String),
    /// Wait, without retrying, until [`unpark`] is called with the tag `on`.
    #[error("parked on {on}: {reason}")]
    Park {
        /// Tag to un-park by, e.g. `installation:<id>`.
        on: String,
        /// Why.
        reason: String,
    },
}

impl JobError {
    /// A transient failure with the default backoff.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        JobError::Retry {
            error: error.to_string(),
            after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(error: impl std::fmt::Display) -> Self {
        JobError::Permanent(error.to_string())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        JobError::retry(format!("database: {error}"))
    }
}

impl Job {
    /// The payload as the handler's input type; a malformed payload can never succeed.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| JobError::permanent(format!("malformed {} payload: {e}", self.kind)))
    }
}

/// What a handler read ahead for one job (see [`Handler::read_ahead`]).
pub type ReadAhead = Box<dyn Any + Send + Sync>;

/// Runs the jobs of one kind.
pub trait Handler: Send + Sync + 'static {
    /// Performs the job once.
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>>;

    /// Reads, in one go, what the jobs about to run in a row need, keyed by job id: a run of a
    /// conversation's backlog then costs one read instead of one per job. Jobs left out (and
    /// every job, by default) read for themselves. A job may run a while after the read (its
    /// predecessors in the run go first), so what is read must stay usable if slightly old.
    fn read_ahead<'a>(&'a self, _jobs: &'a [&'a Job]) -> BoxFuture<'a, HashMap<i64, ReadAhead>> {
        Box::pin(async { HashMap::new() })
    }

    /// [`run`](Self::run), with what [`read_ahead`](Self::read_ahead) read for the job, if
    /// anything.
    fn run_read_ahead<'a>(
        &'a self,
        job: &'a Job,
        _ahead: Option<ReadAhead>,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        self.run(job)
    }
}

/// Job kinds and their handlers.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for jobs of `kind`.
    pub fn register(&mut self, kind: &'static str, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind, Arc::new(handler));
        self
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }
}
