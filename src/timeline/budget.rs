//! The Pipedrive API budget the timeline spends: every company has a daily token budget shared
//! by all its apps and people (30,000 × plan multiplier × seats, reset at midnight). Each call
//! of ours is counted at its published token cost per company per UTC day; we warn at 75 % and
//! pause timeline writes near the limit until the next day, and honour the burst-window headers.
//!
//! Our count is a lower bound of the company's real use (other apps and people spend from the
//! same budget, and Pipedrive does not tell OAuth apps the remainder), so the thresholds leave
//! room for them.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sqlx::PgPool;

use crate::pipedrive::RateLimit;
use crate::store::crm as store;

/// Share of the budget at which a warning is logged (Pipedrive e-mails admins then too).
const WARN_AT: f64 = 0.75;
/// Share at which live timeline writes wait for the next day.
const PAUSE_AT: f64 = 0.90;
/// Share at which replays of history (backfill) wait for the next day: they are never urgent.
const PAUSE_BACKFILL_AT: f64 = 0.75;
/// Longest pause between two calls when the burst window is used up.
const MAX_BREATHER: Duration = Duration::from_secs(10);

/// A Pipedrive call the timeline makes, with its published token cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `GET /api/v2/persons/search`.
    SearchPersons,
    /// `POST /api/v2/persons`.
    CreatePerson,
    /// `GET /api/v2/deals` (list).
    ListDeals,
    /// `GET /v1/leads` (list).
    ListLeads,
    /// `POST /v1/notes`.
    CreateNote,
    /// `PUT /v1/notes/{id}`.
    UpdateNote,
}

impl Call {
    /// Tokens Pipedrive charges for the call.
    pub fn cost(self) -> i64 {
        match self {
            Call::SearchPersons | Call::ListLeads => 20,
            Call::ListDeals | Call::CreateNote | Call::UpdateNote => 10,
            Call::CreatePerson => 5,
        }
    }
}

/// Whether a write may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Enough budget left.
    Go,
    /// Near the limit: wait until this time (the next UTC day).
    PauseUntil(DateTime<Utc>),
}

/// The UTC day of `at`.
pub fn day_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The next UTC midnight after `now`.
pub fn next_day(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = day_of(now) + TimeDelta::days(1);
    tomorrow.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Whether a company that spent `spent` of `budget` tokens today may write now.
pub fn allowance(spent: i64, budget: u64, backfill: bool, now: DateTime<Utc>) -> Allowance {
    let limit = if backfill { PAUSE_BACKFILL_AT } else { PAUSE_AT };
    if spent as f64 >= budget as f64 * limit {
        Allowance::PauseUntil(next_day(now))
    } else {
        Allowance::Go
    }
}

/// How long to wait before the next call when the burst window is used up.
pub fn breather(rate_limit: &RateLimit) -> Option<Duration> {
    (rate_limit.remaining == Some(0)).then(|| {
        rate_limit
            .reset
            .unwrap_or(Duration::from_secs(2))
            .min(MAX_BREATHER)
    })
}

/// The token counter of every company.
#[derive(Debug, Clone)]
pub struct Budget {
    db: PgPool,
    daily: u64,
}

impl Budget {
    /// Counts in `db` against a daily budget of `daily` tokens per company.
    pub fn new(db: PgPool, daily: u64) -> Self {
        Self { db, daily }
    }

    /// Whether `company_id` may write now.
    pub async fn check(&self, company_id: i64, backfill: bool) -> Result<Allowance, sqlx::Error> {
        let now = Utc::now();
        let spent = store::spent(&self.db, company_id, day_of(now)).await?;
        let allowance = allowance(spent, self.daily, backfill, now);
        if let Allowance::PauseUntil(until) = allowance {
            tracing::info!(company_id, spent, budget = self.daily, %until, "timeline writes paused: daily API budget nearly spent");
        }
        Ok(allowance)
    }

    /// Counts one call of `company_id`; warns once a day when 75 % are spent.
    pub async fn record(&self, company_id: i64, call: Call) -> Result<(), sqlx::Error> {
        let today = day_of(Utc::now());
        let spent = store::spend(&self.db, company_id, today, call.cost()).await?;
        metrics::counter!("timeline_api_tokens_total").increment(call.cost() as u64);
        if spent as f64 >= self.daily as f64 * WARN_AT
            && store::mark_warned(&self.db, company_id, today).await?
        {
            tracing::warn!(
                company_id,
                spent,
                budget = self.daily,
                "75 % of the daily Pipedrive API budget spent on the timeline; writes pause at 90 %"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn writes_pause_near_the_limit_until_the_next_utc_day() {
        let now = at("2026-11-24T17:30:00Z");
        assert_eq!(allowance(0, 30_000, false, now), Allowance::Go);
        assert_eq!(allowance(26_999, 30_000, false, now), Allowance::Go);
        assert_eq!(
            allowance(27_000, 30_000, false, now),
            Allowance::PauseUntil(at("2026-11-25T00:00:00Z"))
        );
        assert_eq!(
            allowance(22_500, 30_000, true, now),
            Allowance::PauseUntil(at("2026-11-25T00:00:00Z")),
            "history waits earlier than live conversations"
        );
    }

    #[test]
    fn costs_follow_the_published_table() {
        let first_message = [
            Call::SearchPersons,
            Call::CreatePerson,
            Call::ListDeals,
            Call::ListLeads,
            Call::CreateNote,
        ];
        assert_eq!(first_message.iter().map(|c| c.cost()).sum::<i64>(), 65);
        assert_eq!(Call::UpdateNote.cost(), 10);
    }

    #[test]
    fn an_exhausted_burst_window_is_waited_out() {
        let spent = RateLimit {
            remaining: Some(0),
            reset: Some(Duration::from_secs(1)),
            daily_requests_left: None,
        };
        assert_eq!(breather(&spent), Some(Duration::from_secs(1)));
        let long = RateLimit {
            reset: Some(Duration::from_secs(600)),
            ..spent
        };
        assert_eq!(breather(&long), Some(MAX_BREATHER));
        let fine = RateLimit {
            remaining: Some(40),
            ..spent
        };
        assert_eq!(breather(&fine), None);
        assert_eq!(breather(&RateLimit::default()), None);
    }
}
