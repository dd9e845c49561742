//! `loadgen`: the load harness. Starts a fake Pipedrive and Graph API, a scratch database and the
//! release service binary, drives the service over real HTTP like Meta and Pipedrive do, and
//! prints throughput, latency percentiles, losses, duplicates and the service's memory.
//! See BENCHMARKS.md.

mod clock;
mod deployment;
mod fakes;
mod load;
mod scenarios;
mod service;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::deployment::Options;
use crate::scenarios::{Aged, Pace};

#[derive(Parser)]
#[command(about = "Load harness of pipedrive-whatsapp (see BENCHMARKS.md)")]
struct Cli {
    /// PostgreSQL server the scratch database is created on (dropped afterwards).
    #[arg(
        long,
        env = "LOADGEN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
        global = true
    )]
    database_url: String,
    /// The service binary; by default the `pipedrive-whatsapp` next to this one.
    #[arg(long, global = true)]
    service_bin: Option<PathBuf>,
    /// Where the service's log goes.
    #[arg(long, default_value = "target/loadgen-service.log", global = true)]
    service_log: PathBuf,
    /// Extra service environment, `NAME=value` (repeatable), e.g. `--set QUEUE_CONCURRENCY=64`.
    #[arg(long = "set", value_parser = parse_var, global = true)]
    env: Vec<(String, String)>,
    /// Keep the scratch database for inspection.
    #[arg(long, global = true)]
    keep_database: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Sustained signed webhooks: as fast as `--posters` posters get answers, or at `--rate`.
    Ingest {
        /// Webhooks per second (open loop); 0 posts as fast as the service answers.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Concurrent posters when `--rate` is 0.
        #[arg(long, default_value_t = 64)]
        posters: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 1024)]
        conversations: u64,
        #[command(flatten)]
        aged: Aged,
    },
    /// End to end at a steady rate: webhook sent → Pipedrive receive.
    E2e {
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 1000)]
        conversations: u64,
        #[command(flatten)]
        aged: Aged,
    },
    /// A backlog queued while Pipedrive is down, delivered once it is back.
    Drain {
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        #[arg(long, default_value_t = 1024)]
        conversations: u64,
        #[arg(long, default_value_t = 64)]
        posters: u64,
    },
    /// getConversationById and getConversations on a large store.
    History {
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        #[arg(long, default_value_t = 20_000)]
        conversations: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: u64,
        /// getConversationById reads a second, whatever the answers (open loop), instead of
        /// `--concurrency` readers (0).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// getConversations reads a second, as `--rate`.
        #[arg(long, default_value_t = 0)]
        list_rate: u64,
        /// Seconds each endpoint is read, at its pace, before its measured seconds, reported
        /// apart: the first reads after the seeding and the service's start are the slowest.
        #[arg(long, default_value_t = 0)]
        warm_up: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Every Nth message of a conversation is a photo with a stored attachment (0: none).
        #[arg(long, default_value_t = 0)]
        media_every: u32,
    },
    /// Ceilings of the machine: a no-op axum route and bare single-row INSERTs.
    Baseline {
        #[arg(long, default_value_t = 64)]
        concurrency: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// The no-op server `baseline` starts.
    #[command(hide = true)]
    NoopServer {
        #[arg(long)]
        port: u16,
    },
}

fn parse_var(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=value, got {value:?}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: the run lost, duplicated, reordered or failed requests (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let bin = match cli.service_bin {
        Some(bin) => bin,
        None => std::env::current_exe()?.with_file_name("pipedrive-whatsapp"),
    };
    let mut options = Options {
        server_url: cli.database_url,
        bin,
        log: cli.service_log,
        env: cli.env,
        keep_database: cli.keep_database,
    };
    match cli.scenario {
        Scenario::Ingest {
            rate,
            posters,
            seconds,
            conversations,
            aged,
        } => {
            let pace = if rate == 0 {
                Pace::Posters(posters)
            } else {
                Pace::Rate(rate)
            };
            scenarios::webhooks(&options, "ingest", pace, seconds, conversations, aged).await
        }
        Scenario::E2e {
            rate,
            seconds,
            conversations,
            aged,
        } => {
            let pace = Pace::Rate(rate);
            scenarios::webhooks(&options, "e2e", pace, seconds, conversations, aged).await
        }
        Scenario::Drain {
            messages,
            conversations,
            posters,
        } => {
            // Pipedrive's return is noticed within a second, and the heads of the conversations
            // retried all through the fill do not run out of attempts.
            // Given first, so that `--set` still overrides them.
            options.env.splice(
                0..0,
                [
                    ("QUEUE_RETRY_BASE_SECONDS".into(), "0.5".into()),
                    ("QUEUE_RETRY_MAX_SECONDS".into(), "1".into()),
                    ("QUEUE_MAX_ATTEMPTS".into(), "1000".into()),
                ],
            );
            scenarios::drain(&options, messages, conversations, posters).await
        }
        Scenario::History {
            messages,
            conversations,
            concurrency,
            rate,
            list_rate,
            warm_up,
            seconds,
            media_every,
        } => {
            let pace = |rate| match rate {
                0 => Pace::Posters(concurrency),
                rate => Pace::Rate(rate),
            };
            let paces = [pace(rate), pace(list_rate)];
            let seconds = [warm_up, seconds];
            scenarios::history(&options, messages, conversations, paces, seconds, media_every).await
        }
        Scenario::Baseline { concurrency, seconds } => {
            scenarios::baseline(&options, concurrency, seconds).await
        }
        Scenario::NoopServer { port } => scenarios::noop_server(port).await.map(|()| true),
    }
}
