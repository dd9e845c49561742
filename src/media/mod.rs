//! Media of messages: downloaded from WhatsApp into PostgreSQL, served back through expiring
//! signed links (to Pipedrive and to browsers).

pub mod download;
pub mod serve;
pub mod view;

use chrono::Utc;
use uuid::Uuid;

use crate::config::PublicUrl;
use crate::crypto::Keys;

/// How long a media link handed to Pipedrive stays valid; Pipedrive asks for fresh links
/// (getMessageById) once one stops working.
pub const LINK_TTL_SECONDS: i64 = 24 * 3600;

/// How long the viewer links written into CRM notes stay valid: notes are kept for years, and
/// their text must not change from one rewrite to the next.
pub const VIEW_LINK_TTL_SECONDS: i64 = 10 * 365 * 24 * 3600;

/// Path of an attachment on this service.
pub fn path(attachment_id: Uuid) -> String {
    format!("/media/{attachment_id}")
}

/// The MIME type without parameters, lower-case (`audio/ogg; codecs=opus` → `audio/ogg`).
pub fn base_type(mime_type: &str) -> String {
    mime_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A signed, expiring URL of an attachment.
pub fn signed_url(keys: &Keys, public_url: &PublicUrl, attachment_id: Uuid, ttl_seconds: i64) -> String {
    signed(
        keys,
        public_url,
        &path(attachment_id),
        Utc::now().timestamp() + ttl_seconds,
    )
}

/// A signed URL of an attachment valid for at least `ttl_seconds`, the same for every call
/// within one hour: pages that are rendered again and again (the chat panel while it polls)
/// keep their links, and browsers their cached copies.
pub fn stable_signed_url(
    keys: &Keys,
    public_url: &PublicUrl,
    attachment_id: Uuid,
    ttl_seconds: i64,
) -> String {
    const HOUR: i64 = 3600;
    let expires = (Utc::now().timestamp() + ttl_seconds) / HOUR * HOUR + HOUR;
    signed(keys, public_url, &path(attachment_id), expires)
}

/// Path of an attachment's viewer page.
pub fn view_path(attachment_id: Uuid) -> String {
    format!("/media/{attachment_id}/view")
}

/// A signed URL of an attachment's viewer page, valid until `expires_at` (Unix seconds). The
/// same inputs always give the same URL.
pub fn view_url(keys: &Keys, public_url: &PublicUrl, attachment_id: Uuid, expires_at: i64) -> String {
    signed(keys, public_url, &view_path(attachment_id), expires_at)
}

fn signed(keys: &Keys, public_url: &PublicUrl, path: &str, expires_at: i64) -> String {
    format!("{}?{}", public_url.join(path), keys.sign_link(path, expires_at))
}
