//! Static files compiled into the binary.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Path of the icon Pipedrive shows for our channels (their `avatar_url`).
pub const CHANNEL_ICON_PATH: &str = "/static/whatsapp-channel.png";

const CHANNEL_ICON: &[u8] = include_bytes!("../../static/whatsapp-channel.png");

/// `GET /static/whatsapp-channel.png`: the 96×96 channel icon, cacheable for a long time.
pub async fn channel_icon() -> Response {
    immutable(CHANNEL_ICON, "image/png")
}

/// A compiled-in file that never changes under its URL: cacheable for good (30 days).
pub fn immutable(bytes: &'static [u8], content_type: &'static str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=2592000, immutable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
