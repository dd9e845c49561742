//! The WhatsApp side: Meta's Graph API and the webhooks it sends us.

pub mod batch;
pub mod graph;
pub mod inbound;
pub mod ingest;
pub mod intake;
pub mod outbound;
pub mod payload;
pub mod render;
pub mod reply;
pub mod retention;
pub mod send;
pub mod signature;
pub mod templates;
pub mod webhook;
