//! A deployment to load: a fresh database, the fakes, the service process and the OAuth install
//! that makes the WhatsApp number a Pipedrive channel.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::fakes::{self, FakePipedrive};
use crate::service::Service;

/// The Meta app secret webhooks are signed with.
pub const APP_SECRET: &str = "load-meta-app-secret";
/// The number the load arrives on.
pub const PHONE_NUMBER_ID: &str = "100000000000001";
const WABA_ID: &str = "200000000000001";
const SECRET_KEY: &str = "bG9hZC1nZW5lcmF0b3Itc2VjcmV0LWtleS0zMmJ5dGU=";

/// Where the deployment runs and how.
pub struct Options {
    /// Server URL the scratch database is created on.
    pub server_url: String,
    /// The service binary.
    pub bin: PathBuf,
    /// File the service logs to.
    pub log: PathBuf,
    /// Extra or overriding variables of the service's environment.
    pub env: Vec<(String, String)>,
    /// Keep the database afterwards.
    pub keep_database: bool,
}

/// Everything a scenario drives and checks.
pub struct Deployment {
    /// A pool on the service's database.
    pub db: PgPool,
    /// The fake Pipedrive.
    pub pipedrive: FakePipedrive,
    /// The service process.
    pub service: Service,
    /// Our channel's id.
    pub channel_id: Uuid,
    server: PgPool,
    database: String,
    keep_database: bool,
}

impl Deployment {
    /// Creates the database, starts the fakes and the service, and installs the app.
    pub async fn start(options: &Options) -> anyhow::Result<Self> {
        let (server, database, database_url) = scratch_database(&options.server_url, "pw_load").await?;
        match Self::start_on(options, &database_url).await {
            Ok((db, pipedrive, service, channel_id)) => Ok(Self {
                db,
                pipedrive,
                service,
                channel_id,
                server,
                database,
                keep_database: options.keep_database,
            }),
            Err(error) => {
                // Nothing else will drop it: the run ends here.
                if !options.keep_database {
                    drop_database(&server, &database).await?;
                }
                Err(error)
            }
        }
    }

    /// The fakes and the service on the scratch database at `database_url`, installed.
    async fn start_on(
        options: &Options,
        database_url: &str,
    ) -> anyhow::Result<(PgPool, FakePipedrive, Service, Uuid)> {
        let pipedrive = FakePipedrive::start().await?;
        let graph = fakes::start_graph().await?;
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", database_url),
            ("PIPEDRIVE_CLIENT_ID", fakes::CLIENT_ID),
            ("PIPEDRIVE_CLIENT_SECRET", fakes::CLIENT_SECRET),
            ("PIPEDRIVE_OAUTH_URL", pipedrive.url.as_str()),
            ("WHATSAPP_ACCESS_TOKEN", fakes::GRAPH_TOKEN),
            ("WHATSAPP_APP_SECRET", APP_SECRET),
            ("WHATSAPP_VERIFY_TOKEN", "load-verify-token"),
            ("WHATSAPP_PHONE_NUMBER_IDS", PHONE_NUMBER_ID),
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA_ID),
            ("WHATSAPP_GRAPH_URL", graph.as_str()),
            ("SECRET_KEY", SECRET_KEY),
            ("PIPEDRIVE_SINK", "inbox"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(options.env.iter().cloned());
        let service = Service::start(&options.bin, &env, &options.log).await?;
        let db = PgPoolOptions::new()
            .max_connections(8)
            .connect(database_url)
            .await
            .context("connect to the load database")?;
        install(&service).await?;
        let channel_id = sqlx::query_scalar("SELECT id FROM channels WHERE phone_number_id = $1")
            .bind(PHONE_NUMBER_ID)
            .fetch_one(&db)
            .await
            .context("the install made the number a channel")?;
        Ok((db, pipedrive, service, channel_id))
    }

    /// Stops the service and drops the database (unless kept).
    pub async fn finish(self) -> anyhow::Result<()> {
        self.service.stop().await;
        self.db.close().await;
        if self.keep_database {
            eprintln!("kept database {}", self.database);
        } else {
            drop_database(&self.server, &self.database).await?;
        }
        Ok(())
    }

    /// Webhooks stored but not yet processed.
    pub async fn pending_webhooks(&self) -> anyhow::Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'pending'")
                .fetch_one(&self.db)
                .await?,
        )
    }
}

/// Creates an empty database named `<prefix>_<pid>` on `server_url`; the server pool, the name
/// and the database's URL.
/// The name is ours (prefix and pid), never user input.
pub async fn scratch_database(server_url: &str, prefix: &str) -> anyhow::Result<(PgPool, String, String)> {
    let server = PgPoolOptions::new()
        .max_connections(1)
        .connect(server_url)
        .await
        .with_context(|| "connect to the PostgreSQL server (--database-url)".to_string())?;
    let database = format!("{prefix}_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(&server)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&server)
        .await?;
    let mut url = url::Url::parse(server_url).context("--database-url is not a URL")?;
    url.set_path(&database);
    Ok((server, database, url.to_string()))
}

/// Drops a database made by [`scratch_database`].
pub async fn drop_database(server: &PgPool, database: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
    )))
    .execute(server)
    .await?;
    Ok(())
}

/// The OAuth install, in a browser's place.
async fn install(service: &Service) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let start = client.get(service.url("/auth/pipedrive")).send().await?;
    let location = start
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("the install start redirects to the consent screen")?;
    let state = url::Url::parse(location)?
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .context("the consent redirect carries a state")?;
    let mut callback = url::Url::parse(&service.url("/auth/pipedrive/callback"))?;
    callback
        .query_pairs_mut()
        .append_pair("code", fakes::CODE)
        .append_pair("state", &state);
    let done = client.get(callback).send().await?;
    if done.status() != 200 {
        bail!(
            "install failed: {} {}",
            done.status(),
            done.text().await.unwrap_or_default()
        );
    }
    Ok(())
}
