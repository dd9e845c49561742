//! `GET /avatars/{participant}.svg`: generated initials avatars, since WhatsApp gives us no
//! profile pictures. The business number's avatar shows its verified name, a customer's their
//! profile name.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::http::error::ApiError;
use crate::pipedrive::wire;
use crate::state::AppState;
use crate::store::{channels, contacts};

/// The avatar route.
pub fn router() -> Router<AppState> {
    Router::new().route("/avatars/{file}", get(avatar))
}

async fn avatar(State(state): State<AppState>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("No such participant".into());
    let id = file.strip_suffix(".svg").ok_or_else(not_found)?;
    let name = if let Ok(contact_id) = Uuid::try_parse(id) {
        let mut conn = state.db.acquire().await?;
        let contact = contacts::find(&mut conn, contact_id)
            .await?
            .ok_or_else(not_found)?;
        wire::customer_name(
            contact.profile_name.as_deref(),
            contact.wa_id.as_deref(),
            contact.bsuid.as_deref(),
        )
    } else {
        let channel = channels::find_by_phone_number_id(&state.db, id)
            .await?
            .ok_or_else(not_found)?;
        wire::business_name(&channel)
    };
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; sandbox",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        svg(id, &name),
    )
        .into_response())
}

/// Up to two initials of `name` (digits for a bare phone number).
pub fn initials(name: &str) -> String {
    let words: Vec<&str> = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .map(|w| w.trim_start_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .collect();
    let letters: String = match words.as_slice() {
        [] => "?".into(),
        [one] => one.chars().filter(|c| c.is_alphanumeric()).take(2).collect(),
        [first, .., last] => [first, last].iter().filter_map(|w| w.chars().next()).collect(),
    };
    letters.to_uppercase()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A 96×96 round avatar whose colour is derived from the participant id.
pub fn svg(id: &str, name: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    let hue = u16::from_be_bytes([digest[0], digest[1]]) % 360;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96"><circle cx="48" cy="48" r="48" fill="hsl({hue},55%,45%)"/><text x="48" y="48" dy="0.35em" text-anchor="middle" font-family="Helvetica,Arial,sans-serif" font-size="38" fill="#fff">{}</text></svg>"##,
        escape(&initials(name))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_of_names_and_numbers() {
        assert_eq!(initials("Ana Souza"), "AS");
        assert_eq!(initials("jonas"), "JO");
        assert_eq!(initials("Maria da Silva"), "MS");
        assert_eq!(initials("+5511987654321"), "55");
        assert_eq!(initials(""), "?");
        assert_eq!(initials("<script>"), "SC");
    }

    #[test]
    fn svg_escapes_and_is_stable() {
        assert_eq!(svg("a", "Ana"), svg("a", "Ana"));
        assert!(!svg("a", "<b> <i>").contains("<b>"));
    }
}
