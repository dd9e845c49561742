//! Paced purges: rows past their retention are deleted along a table's primary key, a few
//! hundred a statement, resting between statements. Deleted back to back, a million webhooks
//! took the acknowledgements' p99 from 7–10 ms to 425–543 ms while 400 a second arrived (the
//! deletions' WAL, most likely, delaying the webhooks' commits); paced, it stayed within the
//! machine's noise (BENCHMARKS.md, thirteenth round).

use std::future::Future;
use std::ops::AddAssign;

use tokio_util::sync::CancellationToken;

/// How a purge goes through a table.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Rows looked at per statement: a short transaction each, so a purge never holds many
    /// rows locked, and a first purge of a large table does not hold one transaction open.
    pub scan: i64,
    /// After each statement the purge rests this many times as long as the statement took.
    pub rest: u32,
}

/// The service's pace: a tenth of one connection's time, in statements of about 10 ms; a
/// million webhooks went in about 140 s, 7,000 a second on a slow machine. The rest is a
/// multiple of the statement's time, so a loaded database is left more.
pub const PACE: Pace = Pace { scan: 1_000, rest: 9 };

/// What one statement of a walk did: its count of deleted rows, and the id to go on after
/// (`None` once the walk reached rows too recent to go, or the end).
pub type Step<C> = (C, Option<i64>);

/// What a walk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked<C> {
    /// The deleted rows, as the steps counted them.
    pub deleted: C,
    /// The id the last statement went on after: behind it, nothing is left that this walk's
    /// cutoffs would delete.
    pub resume_after: i64,
}

/// Walks from id `after` at `pace`, one `step(after, scan)` a statement, until a step finds
/// nothing more to go or `shutdown`.
pub async fn walk<C, F, Fut>(
    mut after: i64,
    pace: Pace,
    shutdown: &CancellationToken,
    mut step: F,
) -> Result<Walked<C>, sqlx::Error>
where
    C: AddAssign + Default,
    F: FnMut(i64, i64) -> Fut,
    Fut: Future<Output = Result<Step<C>, sqlx::Error>>,
{
    let mut deleted = C::default();
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let (count, next) = step(after, pace.scan).await?;
        deleted += count;
        match next {
            Some(next) => after = next,
            None => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(started.elapsed() * pace.rest) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    Ok(Walked {
        deleted,
        resume_after: after,
    })
}
