//! Cached WhatsApp message templates of the business account, and the freshness marker of the
//! cache (`sync_state`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

/// An approved template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Meta's template id.
    pub id: String,
    /// Template name.
    pub name: String,
    /// Language code, e.g. `en_US`.
    pub language: String,
    /// BODY text with its `{{n}}` placeholders.
    pub body_text: String,
    /// Components as Meta describes them.
    pub components: serde_json::Value,
}

const KEY: &str = "templates";

/// Every cached template, by name and language.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<Template>, sqlx::Error> {
    sqlx::query_as!(
        Template,
        "SELECT id, name, language, body_text, components FROM templates ORDER BY name, language"
    )
    .fetch_all(db)
    .await
}

/// Replaces the cache with `templates` and marks it fresh.
pub async fn replace_all(conn: &mut PgConnection, templates: &[Template]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM templates").execute(&mut *conn).await?;
    for t in templates {
        sqlx::query!(
            r#"INSERT INTO templates (id, name, language, status, body_text, components)
               VALUES ($1, $2, $3, 'APPROVED', $4, $5)
               ON CONFLICT DO NOTHING"#,
            t.id,
            t.name,
            t.language,
            t.body_text,
            t.components,
        )
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query!(
        r#"INSERT INTO sync_state (key, synced_at, stale) VALUES ($1, now(), false)
           ON CONFLICT (key) DO UPDATE SET synced_at = now(), stale = false"#,
        KEY
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// When the cache was last filled, unless it was marked stale since.
pub async fn fresh_since(db: impl PgExecutor<'_>) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row = sqlx::query!("SELECT synced_at, stale FROM sync_state WHERE key = $1", KEY)
        .fetch_optional(db)
        .await?;
    Ok(row.filter(|r| !r.stale).and_then(|r| r.synced_at))
}

/// Marks the cache stale (a template changed status at Meta).
pub async fn mark_stale(db: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO sync_state (key, stale) VALUES ($1, true)
           ON CONFLICT (key) DO UPDATE SET stale = true"#,
        KEY
    )
    .execute(db)
    .await?;
    Ok(())
}
