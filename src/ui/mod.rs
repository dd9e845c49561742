//! The WhatsApp chat inside Pipedrive: a custom panel on person and deal detail views and a
//! floating window (custom UI extensions), served by us into Pipedrive's iframes.
//!
//! Pipedrive loads each page with a signed `token`; nothing is shown without a valid one. The
//! pages are rendered here; one small script of ours (plus Pipedrive's SDK, bundled at build
//! time) polls the page's API for changes and sends replies through the same path as the
//! inbox's postMessage. The API authenticates with the same kind of token, sent as a bearer.

mod api;
mod assets;
mod floating;
mod panel;
mod person;
mod thread;
pub mod token;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};

use crate::http::error::ApiError;
use crate::http::html;
use crate::state::AppState;
use crate::whatsapp::reply::BODY_LIMIT;
use token::{TokenError, Verifier, Viewer};

/// The pages, their assets and their API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/panel", get(panel::page))
        .route("/ui/floating", get(floating::page))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/api/threads", get(api::threads))
        .route("/ui/api/conversations", get(api::conversations))
        .route("/ui/api/conversations/{id}", get(api::conversation))
        .route("/ui/api/conversations/{id}/seen", post(api::seen))
        .route("/ui/api/templates", get(api::templates))
        .route(
            "/ui/api/conversations/{id}/messages",
            post(api::send).layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
}

/// Verifies a token with the configured extension secret.
fn verify(state: &AppState, token: &str) -> Result<Viewer, TokenError> {
    Verifier::new(&state.config.pipedrive.ui_jwt_secret).verify(token)
}

/// The viewer of an API call, from `Authorization: Bearer <token>`.
pub struct ApiViewer(pub Viewer);

impl FromRequestParts<AppState> for ApiViewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or("");
        verify(state, token).map(ApiViewer).map_err(|error| {
            tracing::info!(%error, "chat API call refused");
            ApiError::Unauthorized(
                "A valid Pipedrive token is required (Authorization: Bearer <token>)".into(),
            )
        })
    }
}

/// The stylesheet and scripts of every page.
fn head() -> String {
    format!(
        "<link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"assets/chat.css?v={css}\">\
<script src=\"assets/sdk.js?v={sdk}\"></script><script src=\"assets/chat.js?v={js}\" defer></script>",
        css = assets::version("chat.css"),
        sdk = assets::version("sdk.js"),
        js = assets::version("chat.js"),
    )
}

/// A page of the chat: `body` is HTML built with escaped values.
fn chat_page(status: StatusCode, title: &str, body: &str) -> Response {
    html::embedded_page(status, title, &head(), body)
}

/// A page with only a notice (no thread): `message` is text.
fn notice(status: StatusCode, title: &str, message: &str) -> Response {
    chat_page(
        status,
        title,
        &format!(
            "<main class=\"notice\"><h1>{}</h1><p>{}</p></main>",
            html::escape(title),
            html::escape(message)
        ),
    )
}

/// The page for a missing, forged or expired token: it names no detail of any thread.
fn refused(error: &TokenError) -> Response {
    tracing::info!(%error, "chat page refused");
    let message = match error {
        TokenError::Expired => "This view has expired. Reload the page in Pipedrive.",
        _ => "This view could not be verified as coming from Pipedrive. Open it from Pipedrive.",
    };
    notice(StatusCode::UNAUTHORIZED, "Not authorised", message)
}

/// The viewer of a page load: the signed `token`, agreeing with the plain `userId` and
/// `companyId` of the URL.
fn page_viewer(state: &AppState, query: &PageQuery) -> Result<Viewer, TokenError> {
    let viewer = verify(state, query.token.as_deref().unwrap_or(""))?;
    viewer.matches(query.company_id.as_deref(), query.user_id.as_deref())?;
    Ok(viewer)
}

/// What Pipedrive puts on the URL of a custom UI page.
#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    token: Option<String>,
    #[serde(rename = "userId")]
    user_id: Option<String>,
    #[serde(rename = "companyId")]
    company_id: Option<String>,
    resource: Option<String>,
    #[serde(rename = "selectedIds")]
    selected_ids: Option<String>,
    id: Option<String>,
}
