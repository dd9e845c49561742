//! Fault injection: the real binary as a child process against real PostgreSQL and fake
//! Pipedrive and Graph API servers, through outages, rate limits, crashes, database restarts,
//! replayed webhooks, a second process and SIGTERM, plus a scan of its logs for secrets. Each
//! scenario prints what it measured (`cargo test --test faults -- --nocapture`).

mod cluster;
#[path = "../support/database.rs"]
mod database;
mod deployment;
mod fake_graph;
mod fake_pipedrive;
mod ledger;
mod service;

mod crash;
mod database_restart;
mod pipedrive_outage;
mod rate_limits;
mod replays;
mod secrets;
mod sigterm;
mod two_processes;
