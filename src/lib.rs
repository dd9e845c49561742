//! pipedrive-whatsapp: a self-hosted bridge between WhatsApp Business Cloud API numbers and
//! Pipedrive CRM (Messaging inbox, CRM timeline) plus Pipedrive's video-calling extension.

pub mod app;
pub mod avatar;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod http;
pub mod manifest;
pub mod media;
pub mod metrics;
pub mod phone;
pub mod pipedrive;
pub mod purge;
pub mod queue;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timeline;
pub mod ui;
pub mod video;
pub mod whatsapp;
