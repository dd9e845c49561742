//! The command line: `serve` (default), `migrate`, `manifest`, `check-config`, `healthcheck`
//! and the operator commands (`outbox`, `channels`, `backfill`, `purge-company`).

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::{self, Application};
use crate::config::{Config, ProcessEnv, Reader};
use crate::manifest::{self, Extension};
use crate::pipedrive::channels::{self as pipedrive_channels, Removal};
use crate::state::AppState;
use crate::store;
use crate::timeline;

/// Bridges WhatsApp Business Cloud API numbers and Pipedrive CRM.
#[derive(Debug, Parser)]
#[command(name = "pipedrive-whatsapp", version, about)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP and run the delivery workers.
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Print the app-extension manifest to upload in Pipedrive's Developer Hub.
    Manifest {
        /// Which extension.
        #[arg(value_enum)]
        extension: Extension,
    },
    /// Validate the environment and print it with secrets redacted.
    CheckConfig,
    /// Exit 0 when the local server answers /healthz (for container health checks).
    Healthcheck,
    /// Inspect and replay the delivery queue.
    Outbox {
        /// What to do with it.
        #[command(subcommand)]
        action: OutboxAction,
    },
    /// Process stored webhooks again: parked ones (for a number added since) or failed ones
    /// (after a fix). Processing is idempotent; nothing is applied twice.
    Webhooks {
        /// Which webhooks.
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// List the WhatsApp numbers' Pipedrive channels, or remove one.
    Channels {
        /// What to do with them.
        #[command(subcommand)]
        action: ChannelsAction,
    },
    /// Replay stored history into the CRM timeline (idempotent: what is already written is not
    /// sent again).
    Backfill {
        /// Only this Pipedrive company.
        #[arg(long = "company", value_name = "ID")]
        company_id: Option<i64>,
        /// Only messages sent on or after this UTC day (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        since: Option<chrono::NaiveDate>,
    },
    /// Delete everything a Pipedrive company left here: its installations and tokens, the
    /// conversations, messages and attachments of its channels, its video links and meetings.
    PurgeCompany {
        /// The Pipedrive company id.
        company_id: i64,
        /// Confirm the deletion (nothing is deleted without it).
        #[arg(long)]
        yes: bool,
    },
}

/// `channels` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelsAction {
    /// List every channel: number, display number, mode, Pipedrive channel id, installation.
    List,
    /// Delete a channel in Pipedrive (tolerating the retired Channels API) and disable it here.
    Delete {
        /// The WhatsApp phone number id of the channel.
        phone_number_id: String,
    },
}

/// `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Queue stored webhooks for processing again.
    Replay {
        /// Webhooks parked for a phone number this deployment did not serve (kept 30 days by
        /// default, PARKED_WEBHOOK_RETENTION_DAYS).
        #[arg(long, required_unless_present = "failed")]
        parked: bool,
        /// Webhooks whose processing failed.
        #[arg(long)]
        failed: bool,
    },
}

/// `outbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List unfinished jobs (oldest first).
    List {
        /// Only dead-lettered jobs.
        #[arg(long)]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Re-queue a dead-lettered job, or all of them.
    Retry {
        /// The job id.
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<i64>,
        /// Every dead-lettered job.
        #[arg(long)]
        all_dead: bool,
    },
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve().await,
        Command::Migrate => {
            let config = load_config()?;
            crate::telemetry::init(config.log_format, &config.log_filter);
            let db = connect(&config).await?;
            store::migrate(&db).await.context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Manifest { extension } => {
            let reader = Reader::new(&ProcessEnv);
            let manifest = manifest::render(extension, &reader.public_url()?, &reader.pipedrive_client_id()?);
            println!("{}", serde_json::to_string_pretty(&manifest)?);
            Ok(())
        }
        Command::CheckConfig => {
            let config = load_config()?;
            print!("{}", config.redacted_listing());
            println!("# configuration is valid");
            Ok(())
        }
        Command::Healthcheck => healthcheck().await,
        Command::Outbox { action } => outbox(action).await,
        Command::Webhooks {
            action: WebhooksAction::Replay { parked, failed },
        } => replay_webhooks(parked, failed).await,
        Command::Channels { action } => channels(action).await,
        Command::Backfill { company_id, since } => backfill(company_id, since).await,
        Command::PurgeCompany { company_id, yes } => purge_company(company_id, yes).await,
    }
}

fn load_config() -> anyhow::Result<Config> {
    Ok(Config::load(&ProcessEnv)?)
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let db = store::pool(&config.database_url, 2).context("DATABASE_URL: invalid connection string")?;
    store::wait_until_reachable(&db, 10)
        .await
        .context("DATABASE_URL: database not reachable")?;
    Ok(db)
}

async fn serve() -> anyhow::Result<()> {
    let config = load_config()?;
    crate::telemetry::init(config.log_format, &config.log_filter);
    let application = Application::build(config).await?;
    let shutdown = application.shutdown_token();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        shutdown.cancel();
    });
    application.run_until_stopped().await
}

async fn healthcheck() -> anyhow::Result<()> {
    let reader = Reader::new(&ProcessEnv);
    let listen: std::net::SocketAddr = reader
        .optional("LISTEN_ADDR")
        .unwrap_or_else(|| "0.0.0.0:8080".into())
        .parse()
        .context("LISTEN_ADDR: expected a socket address such as 0.0.0.0:8080")?;
    let url = format!("http://127.0.0.1:{}/healthz", listen.port());
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{url} answered {}",
        response.status()
    );
    Ok(())
}

async fn replay_webhooks(parked: bool, failed: bool) -> anyhow::Result<()> {
    let config = load_config()?;
    let db = connect(&config).await?;
    for (wanted, state) in [(parked, "parked"), (failed, "failed")] {
        if wanted {
            let n = store::webhook_events::requeue(&db, state).await?;
            println!("{n} {state} webhook(s) queued for processing; a running service picks them up");
        }
    }
    Ok(())
}

async fn outbox(action: OutboxAction) -> anyhow::Result<()> {
    let config = load_config()?;
    let db = connect(&config).await?;
    match action {
        OutboxAction::List { dead, limit } => {
            let jobs = store::jobs::list(&db, dead, limit).await?;
            if jobs.is_empty() {
                println!("no {}jobs", if dead { "dead " } else { "unfinished " });
            }
            for job in jobs {
                println!(
                    "{:>8}  {:<8} {:<24} attempts={:<3} next={} {}{}",
                    job.id,
                    job.state,
                    job.kind,
                    job.attempts,
                    job.run_at.format("%Y-%m-%d %H:%M:%S"),
                    job.parked_on
                        .map(|p| format!("parked_on={p} "))
                        .unwrap_or_default(),
                    job.last_error.map(|e| format!("error={e}")).unwrap_or_default(),
                );
            }
        }
        OutboxAction::Retry { id, all_dead } => {
            let requeued = store::jobs::retry_dead(&db, if all_dead { None } else { id }).await?;
            println!("re-queued {requeued} dead job(s)");
            anyhow::ensure!(
                requeued > 0 || all_dead,
                "job {} is not dead-lettered",
                id.unwrap_or_default()
            );
        }
    }
    Ok(())
}

async fn channels(action: ChannelsAction) -> anyhow::Result<()> {
    let config = load_config()?;
    let db = connect(&config).await?;
    match action {
        ChannelsAction::List => {
            let channels = store::channels::list(&db).await?;
            println!(
                "{:<20} {:<20} {:<9} {:<38} installation",
                "phone_number_id", "display_number", "mode", "pipedrive_channel_id"
            );
            for channel in channels {
                println!(
                    "{:<20} {:<20} {:<9} {:<38} {}",
                    channel.phone_number_id,
                    channel.display_phone_number.as_deref().unwrap_or("-"),
                    serde_json::to_value(channel.mode)?.as_str().unwrap_or("?"),
                    channel.pipedrive_channel_id.as_deref().unwrap_or("-"),
                    match (channel.installation_id, channel.company_id) {
                        (Some(id), Some(company)) => format!("{id} (company {company})"),
                        _ => "-".into(),
                    },
                );
            }
        }
        ChannelsAction::Delete { phone_number_id } => {
            let state = AppState::new(config, db, crate::queue::RetryPolicy::default());
            let removal = pipedrive_channels::remove(&state.pipedrive, &state.db, &phone_number_id).await?;
            let what = match removal {
                Removal::Deleted => "deleted in Pipedrive",
                Removal::ApiRetired => "not in Pipedrive (its Channels API is retired)",
                Removal::LocalOnly => "left alone in Pipedrive (no installation can call it)",
            };
            println!("channel {phone_number_id} {what}; disabled here");
        }
    }
    Ok(())
}

async fn backfill(company_id: Option<i64>, since: Option<chrono::NaiveDate>) -> anyhow::Result<()> {
    let config = load_config()?;
    crate::telemetry::init(config.log_format, &config.log_filter);
    let db = connect(&config).await?;
    store::migrate(&db).await.context("applying migrations")?;
    let state = AppState::new(config, db, crate::queue::RetryPolicy::default());
    let options = timeline::backfill::Options { company_id, since };
    let writer = timeline::Writer::new(&state);
    let mut progress = None;
    let summary = timeline::backfill::run(&writer, state.retry, &options, |done, total| {
        progress
            .get_or_insert_with(|| timeline::backfill::Progress::new(total))
            .tick(done, total)
    })
    .await?;
    if let Some(progress) = progress {
        progress.finish();
    }
    println!("backfill finished: {} conversation-day(s)", summary.days);
    for line in summary.lines() {
        println!("{line}");
    }
    anyhow::ensure!(
        summary.failed == 0,
        "{} conversation-day(s) failed; the running service retries them (see `outbox list`)",
        summary.failed
    );
    Ok(())
}

async fn purge_company(company_id: i64, confirmed: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        confirmed,
        "purge-company deletes company {company_id}'s installations, conversations, messages, \
         attachments and meetings for good; run it again with --yes to confirm"
    );
    let config = load_config()?;
    let db = connect(&config).await?;
    let mut tx = db.begin().await?;
    let purged = store::purge::company(&mut tx, company_id).await?;
    tx.commit().await?;
    println!("purged company {company_id}:");
    for (what, count) in [
        ("installations", purged.installations),
        ("channels detached", purged.channels),
        ("conversations", purged.conversations),
        ("messages", purged.messages),
        ("attachments", purged.attachments),
        ("contacts", purged.contacts),
        ("video links", purged.video_links),
        ("meetings", purged.meetings),
        ("waiting jobs", purged.jobs),
    ] {
        println!("  {what}: {count}");
    }
    Ok(())
}
