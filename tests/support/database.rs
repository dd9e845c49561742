//! Test databases on the shared PostgreSQL server (`DATABASE_URL`), shared by the test binaries
//! that include this file (`#[path = "../support/database.rs"]`). Names start with
//! `$PW_TEST_DB_PREFIX` (`scripts/test` sets one per run and drops its databases at the end).

use sqlx::{Connection, Executor, PgConnection};

/// URL of the PostgreSQL server the test databases live on.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database on the server at `server` and returns its URL.
pub async fn fresh_database(server: &str) -> String {
    let prefix = std::env::var("PW_TEST_DB_PREFIX").unwrap_or_else(|_| "pwtest_".into());
    let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(server)
        .await
        .expect("PostgreSQL for tests is reachable (DATABASE_URL)");
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .expect("create test database");
    let mut url = url::Url::parse(server).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}
