//! `pipedrive-whatsapp backfill`: replays stored history into the CRM timeline, one
//! conversation-day at a time, oldest first. Each day is a `timeline_note` job run right here
//! (so it never races the service's own write of the same customer: jobs of one customer run
//! one after another); a day whose customer has work pending in the service is left to it.
//! Re-running changes nothing already written: unchanged transcripts are not sent again.

use std::io::IsTerminal;
use std::sync::Mutex;

use chrono::{NaiveDate, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{DEBOUNCE, KIND, Outcome, Task, Writer, Written, ordering_key, settle};
use crate::queue::{self, Handler, Job, JobError, NewJob, RetryPolicy};
use crate::store::timeline as store;

/// Which history to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this Pipedrive company.
    pub company_id: Option<i64>,
    /// Only messages sent on or after this UTC day.
    pub since: Option<NaiveDate>,
}

/// What a backfill did, per conversation-day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Conversation-days looked at.
    pub days: usize,
    /// Notes created.
    pub created: u32,
    /// Notes rewritten in place.
    pub updated: u32,
    /// Notes already up to date.
    pub unchanged: u32,
    /// Days without a Pipedrive person to write on.
    pub no_person: u32,
    /// Days whose customer had work pending in the service, left to it.
    pub left_to_service: u32,
    /// Days paused because the company's daily API budget is nearly spent (the service writes
    /// them the next day).
    pub paused: u32,
    /// Days that failed (the service retries them).
    pub failed: u32,
}

impl Summary {
    fn count(&mut self, written: Written) {
        match written {
            Written::Notes {
                created,
                updated,
                unchanged,
            } => {
                self.created += created;
                self.updated += updated;
                self.unchanged += unchanged;
            }
            Written::NoPerson => self.no_person += 1,
            Written::Nothing => {}
            Written::Paused(_) => self.paused += 1,
        }
    }

    /// The summary as lines for the operator.
    pub fn lines(&self) -> Vec<String> {
        [
            ("notes created", self.created),
            ("notes rewritten", self.updated),
            ("notes already up to date", self.unchanged),
            ("days without a Pipedrive person", self.no_person),
            ("days left to the running service", self.left_to_service),
            ("days paused until tomorrow (API budget)", self.paused),
            ("days failed (the service retries them)", self.failed),
        ]
        .iter()
        .map(|(what, n)| format!("  {what}: {n}"))
        .collect()
    }
}

/// Runs one day's job here and keeps what the write did.
struct Replay {
    writer: Writer,
    last: Mutex<Option<Result<Written, String>>>,
}

impl Handler for Replay {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let task: Task = job.input()?;
            let result = self.writer.write_day(task.conversation_id, task.day, true).await;
            let kept = match &result {
                Ok(Outcome { written, .. }) => Ok(*written),
                Err(error) => Err(error.to_string()),
            };
            *self.last.lock().expect("never poisoned") = Some(kept);
            settle(result, DEBOUNCE)
        })
    }
}

/// Replays the history `options` select; `progress` hears of each finished day.
pub async fn run(
    writer: &Writer,
    retry: RetryPolicy,
    options: &Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary, sqlx::Error> {
    let db = writer.db.clone();
    let days = store::stored_days(&db, options.company_id, options.since).await?;
    let replay = Replay {
        writer: writer.clone(),
        last: Mutex::new(None),
    };
    let mut summary = Summary {
        days: days.len(),
        ..Summary::default()
    };
    for (done, day) in days.iter().enumerate() {
        let task = Task {
            conversation_id: day.conversation_id,
            day: day.day,
            backfill: true,
        };
        // Scheduled later so that the service's workers leave it to us, and take it should we
        // stop half-way.
        let job = NewJob::new(KIND, &task)
            .ordered_by(ordering_key(day.contact_id))
            .run_at(Utc::now() + TimeDelta::minutes(10));
        let mut conn = db.acquire().await?;
        let Some(id) = queue::enqueue(&mut conn, job).await? else {
            continue;
        };
        drop(conn);
        match queue::run_inline(&db, id, &replay, retry).await? {
            None => summary.left_to_service += 1,
            Some(_) => match replay.last.lock().expect("never poisoned").take() {
                Some(Ok(written)) => summary.count(written),
                Some(Err(error)) => {
                    tracing::warn!(conversation_id = %day.conversation_id, day = %day.day, error, "backfill of a day failed");
                    summary.failed += 1;
                }
                None => summary.failed += 1,
            },
        }
        progress(done + 1, days.len());
    }
    Ok(summary)
}

/// Progress on stdout: a bar on a terminal, otherwise a line every tenth of the way.
pub struct Progress {
    bar: Option<ProgressBar>,
    reported: usize,
}

impl Progress {
    /// Progress over `total` days.
    pub fn new(total: usize) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} conversation-days ({eta} left)")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        Self { bar, reported: 0 }
    }

    /// `done` of `total` days are finished.
    pub fn tick(&mut self, done: usize, total: usize) {
        match &self.bar {
            Some(bar) => bar.set_position(done as u64),
            None => {
                let step = (total / 10).max(1);
                if done == total || done >= self.reported + step {
                    self.reported = done;
                    println!("backfill: {done}/{total} conversation-days");
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
