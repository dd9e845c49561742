//! PostgreSQL: the connection pool, embedded migrations, and one module per aggregate holding
//! all of the SQL. Functions take an executor so callers can compose them in one transaction.

pub mod attachments;
pub mod channels;
pub mod contacts;
pub mod conversations;
pub mod crm;
pub mod installations;
pub mod jobs;
pub mod meetings;
pub mod messages;
pub mod purge;
pub mod templates;
pub mod timeline;
pub mod video_links;
pub mod webhook_events;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// Every migration in `migrations/`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens a pool without connecting yet; connections are made (and re-made after an outage) on
/// demand, so the service survives a database restart without restarting itself.
pub fn pool(database_url: &SecretString, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = database_url
        .expose_secret()
        .parse::<PgConnectOptions>()?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
        // Our statements are short; JIT compiling one whose cost estimate is high (the queue's
        // claim over a deep backlog) took longer than running it.
        .options([("jit", "off")]);
    Ok(pool_options(max_connections).connect_lazy_with(options))
}

/// How every pool of the service hands out connections.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // Connections kept open while idle: a burst after start-up or a quiet spell otherwise
        // waits for PostgreSQL to start a backend per connection, and each new backend plans
        // every statement afresh (at 1,000 webhooks a second that held deliveries back ~100 ms).
        .min_connections(max_connections.min(10))
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        // A ping before every checkout doubled the round trips of short statements. A connection
        // the server dropped fails its next statement instead, and every caller already retries
        // database errors (webhooks answer 503, jobs run again).
        .test_before_acquire(false)
}

/// A small pool on the same database whose commits do not wait for the disk
/// (`synchronous_commit = off`), for bookkeeping that may be lost in a database crash without
/// losing anything else: a lost job claim or settle only makes the job run again, and every
/// job is idempotent. It spares the queue one disk flush per claim and per group of settles,
/// which the webhook acknowledgements would otherwise queue behind.
pub fn relaxed_pool(db: &PgPool, max_connections: u32) -> PgPool {
    let options = (*db.connect_options())
        .clone()
        .options([("synchronous_commit", "off")]);
    pool_options(max_connections).connect_lazy_with(options)
}

/// Waits (bounded) until the database answers, so a container started next to PostgreSQL does
/// not fail while the database is still booting.
pub async fn wait_until_reachable(pool: &PgPool, attempts: u32) -> Result<(), sqlx::Error> {
    let mut attempt = 0;
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(error) if attempt + 1 < attempts && is_unavailable(&error) => {
                attempt += 1;
                tracing::warn!(%error, attempt, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Applies pending migrations. sqlx takes an advisory lock, so replicas starting together
/// apply them once.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when the error means "the database cannot be reached right now" rather than a bug.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            true
        }
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now),
            // 53300 (too many connections).
            db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            })
        }
        _ => false,
    }
}

/// The database as `/readyz` reports it.
#[derive(Debug, Serialize)]
pub struct DatabaseStatus {
    /// The database answered a query.
    pub reachable: bool,
    /// Migrations recorded as applied.
    pub migrations_applied: usize,
    /// Migrations this binary carries.
    pub migrations_expected: usize,
    /// Why the database is not ready, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DatabaseStatus {
    /// Reachable and every embedded migration applied.
    pub fn is_ready(&self) -> bool {
        self.reachable && self.migrations_applied >= self.migrations_expected
    }
}

/// Checks that the database answers and carries every migration of this binary.
pub async fn status(pool: &PgPool) -> DatabaseStatus {
    let expected: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| m.version)
        .collect();
    let applied = sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await;
    match applied {
        Ok(applied) => DatabaseStatus {
            reachable: true,
            migrations_applied: expected.iter().filter(|v| applied.contains(v)).count(),
            migrations_expected: expected.len(),
            error: None,
        },
        Err(error) => {
            let reachable = !is_unavailable(&error);
            DatabaseStatus {
                reachable,
                migrations_applied: 0,
                migrations_expected: expected.len(),
                error: Some(if reachable {
                    "migrations have not been applied".into()
                } else {
                    "database unreachable".into()
                }),
            }
        }
    }
}
