//! What we know of each company's Pipedrive CRM: which person a customer's number is, and the
//! API tokens the timeline spent per day.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};

/// What is known of the person behind a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum PersonState {
    /// One person has the number.
    Linked,
    /// Several persons have it: none is picked.
    Ambiguous,
    /// No person has it (and none may be created).
    Missing,
}

/// The person link of a number in a company.
#[derive(Debug, Clone)]
pub struct PersonLink {
    /// What is known.
    pub state: PersonState,
    /// The person, when linked.
    pub person_id: Option<i64>,
    /// The persons found, when ambiguous.
    pub candidates: Vec<i64>,
    /// When Pipedrive was last asked.
    pub checked_at: DateTime<Utc>,
}

/// The person link of `phone` (E.164) in `company_id`.
pub async fn person(
    db: impl PgExecutor<'_>,
    company_id: i64,
    phone: &str,
) -> Result<Option<PersonLink>, sqlx::Error> {
    sqlx::query_as!(
        PersonLink,
        r#"SELECT state AS "state: PersonState", person_id, candidates, checked_at
           FROM timeline_persons WHERE company_id = $1 AND phone = $2"#,
        company_id,
        phone,
    )
    .fetch_optional(db)
    .await
}

/// Records what Pipedrive said about `phone` in `company_id`.
pub async fn save_person(
    db: impl PgExecutor<'_>,
    company_id: i64,
    phone: &str,
    state: PersonState,
    person_id: Option<i64>,
    candidates: &[i64],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO timeline_persons (company_id, phone, state, person_id, candidates)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (company_id, phone) DO UPDATE SET state = $3, person_id = $4, candidates = $5,
                  checked_at = now(), updated_at = now()"#,
        company_id,
        phone,
        state as PersonState,
        person_id,
        candidates,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets a person Pipedrive no longer has: its numbers are looked up again, and the days that
/// were to be written on it decide their links again.
pub async fn forget_person(
    db: &mut PgConnection,
    company_id: i64,
    person_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM timeline_persons WHERE company_id = $1 AND person_id = $2",
        company_id,
        person_id,
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!(
        r#"UPDATE timeline_days SET person_id = NULL, deal_id = NULL, lead_id = NULL, updated_at = now()
           WHERE company_id = $1 AND person_id = $2"#,
        company_id,
        person_id,
    )
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// Adds `tokens` to what a company spent on `day`; returns the day's total.
pub async fn spend(
    db: impl PgExecutor<'_>,
    company_id: i64,
    day: NaiveDate,
    tokens: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"INSERT INTO timeline_budget (company_id, day, tokens, calls) VALUES ($1, $2, $3, 1)
           ON CONFLICT (company_id, day)
           DO UPDATE SET tokens = timeline_budget.tokens + $3, calls = timeline_budget.calls + 1
           RETURNING tokens"#,
        company_id,
        day,
        tokens,
    )
    .fetch_one(db)
    .await
}

/// Tokens a company spent on `day`.
pub async fn spent(db: impl PgExecutor<'_>, company_id: i64, day: NaiveDate) -> Result<i64, sqlx::Error> {
    let tokens = sqlx::query_scalar!(
        "SELECT tokens FROM timeline_budget WHERE company_id = $1 AND day = $2",
        company_id,
        day,
    )
    .fetch_optional(db)
    .await?;
    Ok(tokens.unwrap_or(0))
}

/// Marks a company-day as warned about; true the first time only.
pub async fn mark_warned(
    db: impl PgExecutor<'_>,
    company_id: i64,
    day: NaiveDate,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE timeline_budget SET warned = true
           WHERE company_id = $1 AND day = $2 AND NOT warned"#,
        company_id,
        day,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes a company's person links and budget counters (its days go with its conversations).
pub async fn purge_company(conn: &mut PgConnection, company_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM timeline_persons WHERE company_id = $1", company_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query!("DELETE FROM timeline_budget WHERE company_id = $1", company_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
