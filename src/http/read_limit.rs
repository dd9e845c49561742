//! A bound on Pipedrive's reads in flight. Past it a read is answered at once with the
//! contract's 429 `RATE_LIMIT_EXCEEDED`, a `retry_by` a second later and `Retry-After`, instead
//! of joining the queue for a database connection. The contract has no 5xx: 429 is how a
//! provider tells Pipedrive it is throttling, and when to try again. Under more reads than
//! the machine answers, that queue grew without bound until the pool's timeout failed them
//! after 3 s: the service reached 286–292 MiB, and the reads it answered took 3 s at the median
//! (BENCHMARKS.md, eleventh round).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{TimeDelta, Utc};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::state::AppState;

/// Reads allowed in flight per connection of the database pool: enough that the reads arriving
/// during a stall of the machine of about 100 ms at 2,000–3,000 a second wait for a connection
/// rather than being refused (8 refused some), few enough to keep the service near 40 MiB under
/// four times the reads it answers (BENCHMARKS.md, twelfth round).
pub const READS_PER_CONNECTION: usize = 32;

/// The permits of the reads in flight; cheap to clone.
#[derive(Clone, Debug)]
pub struct ReadLimit(Arc<Semaphore>);

impl ReadLimit {
    /// Room for `reads` reads in flight.
    pub fn new(reads: usize) -> Self {
        Self(Arc::new(Semaphore::new(reads)))
    }
}

/// Middleware: runs the read while it holds a permit, or refuses it when none is left.
pub async fn limit_reads(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.read_limit.0.clone().try_acquire_owned() else {
        metrics::counter!("provider_reads_refused_total").increment(1);
        return ApiError::RateLimited {
            message: "Too many reads in progress; try again in a second".into(),
            retry_by: Utc::now() + TimeDelta::seconds(1),
        }
        .into_response();
    };
    next.run(request).await
}
