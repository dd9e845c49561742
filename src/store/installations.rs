//! Installations (a Pipedrive user who authorised the app, with their sealed tokens) and the
//! single-use OAuth `state` values.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Whether an installation's tokens can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum InstallationStatus {
    /// Tokens work (or can be refreshed).
    Active,
    /// The refresh token was refused: the user must run the install again.
    NeedsReauth,
    /// Removed in Pipedrive; tokens deleted.
    Uninstalled,
}

/// What the install flow stores for a user; tokens arrive sealed.
#[derive(Debug, Clone)]
pub struct NewInstallation<'a> {
    /// Pipedrive company id.
    pub company_id: i64,
    /// Pipedrive user id of the installer.
    pub user_id: i64,
    /// Company name from `/users/me`.
    pub company_name: Option<&'a str>,
    /// Company subdomain from `/users/me`.
    pub company_domain: Option<&'a str>,
    /// Installer's name.
    pub user_name: Option<&'a str>,
    /// Installer's e-mail.
    pub user_email: Option<&'a str>,
    /// Base URL of the company's API.
    pub api_domain: &'a str,
    /// Sealed access token.
    pub access_token_enc: &'a [u8],
    /// Sealed refresh token.
    pub refresh_token_enc: &'a [u8],
    /// When the access token expires.
    pub token_expires_at: DateTime<Utc>,
    /// Granted scopes.
    pub scopes: &'a [String],
}

/// The result of storing an installation.
#[derive(Debug, Clone, Copy)]
pub struct Installed {
    /// The installation id (kept across re-installs).
    pub id: Uuid,
    /// Status before this install; `None` for a first install.
    pub previous_status: Option<InstallationStatus>,
}

/// Inserts or refreshes the installation of `(company_id, user_id)`: new tokens, status active.
pub async fn upsert(conn: &mut PgConnection, new: &NewInstallation<'_>) -> Result<Installed, sqlx::Error> {
    let previous_status = sqlx::query_scalar!(
        r#"SELECT status AS "status: InstallationStatus" FROM installations
           WHERE company_id = $1 AND user_id = $2 FOR UPDATE"#,
        new.company_id,
        new.user_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let id = sqlx::query_scalar!(
        r#"INSERT INTO installations (id, company_id, user_id, company_name, company_domain,
                  user_name, user_email, api_domain, access_token_enc, refresh_token_enc,
                  token_expires_at, scopes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (company_id, user_id) DO UPDATE SET
                  company_name = EXCLUDED.company_name, company_domain = EXCLUDED.company_domain,
                  user_name = EXCLUDED.user_name, user_email = EXCLUDED.user_email,
                  api_domain = EXCLUDED.api_domain, access_token_enc = EXCLUDED.access_token_enc,
                  refresh_token_enc = EXCLUDED.refresh_token_enc,
                  token_expires_at = EXCLUDED.token_expires_at, scopes = EXCLUDED.scopes,
                  status = 'active', status_reason = NULL, uninstalled_at = NULL, updated_at = now()
           RETURNING id"#,
        Uuid::now_v7(),
        new.company_id,
        new.user_id,
        new.company_name,
        new.company_domain,
        new.user_name,
        new.user_email,
        new.api_domain,
        new.access_token_enc,
        new.refresh_token_enc,
        new.token_expires_at,
        new.scopes,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Installed { id, previous_status })
}

/// What calling Pipedrive as an installation needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Installation id.
    pub id: Uuid,
    /// Pipedrive company id.
    pub company_id: i64,
    /// Base URL of the company's API.
    pub api_domain: String,
    /// Sealed access token (also the version the refresh compares against).
    pub access_token_enc: Option<Vec<u8>>,
    /// Sealed refresh token.
    pub refresh_token_enc: Option<Vec<u8>>,
    /// When the access token expires.
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Current status.
    pub status: InstallationStatus,
}

/// The credentials of an installation.
pub async fn credentials(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        r#"SELECT id, company_id, api_domain, access_token_enc, refresh_token_enc, token_expires_at,
                  status AS "status: InstallationStatus"
           FROM installations WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The credentials of an installation, row-locked until the transaction ends, so that two
/// processes never refresh the same tokens at once.
pub async fn lock_credentials(conn: &mut PgConnection, id: Uuid) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        r#"SELECT id, company_id, api_domain, access_token_enc, refresh_token_enc, token_expires_at,
                  status AS "status: InstallationStatus"
           FROM installations WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Stores the tokens of a successful refresh.
pub async fn store_refreshed(
    conn: &mut PgConnection,
    id: Uuid,
    access_token_enc: &[u8],
    refresh_token_enc: &[u8],
    token_expires_at: DateTime<Utc>,
    api_domain: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE installations SET access_token_enc = $2, refresh_token_enc = $3,
                  token_expires_at = $4, api_domain = COALESCE($5, api_domain), updated_at = now()
           WHERE id = $1"#,
        id,
        access_token_enc,
        refresh_token_enc,
        token_expires_at,
        api_domain,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks an active installation as needing a new consent; false when it was not active.
pub async fn mark_needs_reauth(db: impl PgExecutor<'_>, id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE installations SET status = 'needs_reauth', status_reason = $2, updated_at = now()
           WHERE id = $1 AND status = 'active'"#,
        id,
        reason,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes the tokens of a company's installations (one user's, when `user_id` is given) and
/// marks them uninstalled; returns their ids.
pub async fn uninstall(
    conn: &mut PgConnection,
    company_id: i64,
    user_id: Option<i64>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"UPDATE installations SET access_token_enc = NULL, refresh_token_enc = NULL,
                  token_expires_at = NULL, status = 'uninstalled',
                  status_reason = 'uninstalled in Pipedrive', uninstalled_at = now(), updated_at = now()
           WHERE company_id = $1 AND ($2::bigint IS NULL OR user_id = $2)
           RETURNING id"#,
        company_id,
        user_id,
    )
    .fetch_all(conn)
    .await
}

/// Records whether the installation is shared company-wide; returns how many rows matched.
pub async fn set_shared(
    db: impl PgExecutor<'_>,
    company_id: i64,
    user_id: Option<i64>,
    shared: bool,
) -> Result<u64, sqlx::Error> {
    let updated = sqlx::query!(
        r#"UPDATE installations SET is_shared = $3, updated_at = now()
           WHERE company_id = $1 AND ($2::bigint IS NULL OR user_id = $2)"#,
        company_id,
        user_id,
        shared,
    )
    .execute(db)
    .await?;
    Ok(updated.rows_affected())
}

/// A Pipedrive user, as `/readyz` names them.
#[derive(Debug, Clone, Serialize)]
pub struct CompanyUser {
    /// Pipedrive company id.
    pub company_id: i64,
    /// Pipedrive user id.
    pub user_id: i64,
}

/// Installations at a glance, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Installations whose tokens work.
    pub active: i64,
    /// Users who must run the install again.
    pub needs_reauth: Vec<CompanyUser>,
}

/// Counts active installations and lists the ones needing a new consent.
pub async fn summary(db: impl PgExecutor<'_> + Copy) -> Result<Summary, sqlx::Error> {
    let active =
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM installations WHERE status = 'active'"#)
            .fetch_one(db)
            .await?;
    let needs_reauth = sqlx::query_as!(
        CompanyUser,
        r#"SELECT company_id, user_id FROM installations WHERE status = 'needs_reauth'
           ORDER BY company_id, user_id"#
    )
    .fetch_all(db)
    .await?;
    Ok(Summary { active, needs_reauth })
}

/// Redeems an OAuth `state` nonce: true the first time, false on a replay. Rows of states
/// that have expired anyway are dropped on the way.
pub async fn redeem_state(
    conn: &mut PgConnection,
    nonce: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    sqlx::query!("DELETE FROM oauth_states WHERE expires_at < now()")
        .execute(&mut *conn)
        .await?;
    let inserted = sqlx::query!(
        r#"INSERT INTO oauth_states (nonce, expires_at) VALUES ($1, $2)
           ON CONFLICT (nonce) DO NOTHING"#,
        nonce,
        expires_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The installation to call Pipedrive as for a user of a company: their own when it is active,
/// else another active one of the company (a user the app was shared with).
pub async fn acting_for(
    db: impl PgExecutor<'_>,
    company_id: i64,
    user_id: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT id FROM installations WHERE company_id = $1 AND status = 'active'
           ORDER BY (user_id = $2) DESC, installed_at LIMIT 1"#,
        company_id,
        user_id,
    )
    .fetch_optional(db)
    .await
}
