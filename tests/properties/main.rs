//! Property tests: the renderers (WhatsApp message → text, stored message → Pipedrive's wire
//! shape) and the message status machine, as a pure model and against PostgreSQL.

#[path = "../support/database.rs"]
mod database;
mod render;
mod status_machine;
mod wire;
