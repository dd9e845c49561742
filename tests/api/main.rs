//! End-to-end tests: the real application over HTTP, real PostgreSQL, fake Pipedrive and Meta.

mod bad_input;
mod cli;
mod contract;
mod crm_fake;
mod delivery;
mod helpers;
mod install;
mod media;
mod ops;
mod pipedrive_fake;
mod post_message;
mod provider;
mod queue;
mod timeline;
mod timeline_replay;
mod tokens;
mod ui;
mod ui_browser;
mod uninstall;
mod video;
mod webhooks;
