//! `GET /ui/panel`: the custom panel of person and deal detail views. It shows the WhatsApp
//! threads of the person's phone numbers (a deal: of its contact person) on the company's
//! numbers, each with its reply box.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::person::{self, LookupError, Subject};
use super::thread::{self, Links, Thread};
use super::{PageQuery, chat_page, notice, page_viewer, refused};
use crate::http::html::escape;
use crate::pipedrive::PipedriveError;
use crate::state::AppState;
use crate::store::{channels, conversations, installations};

/// The detail view the panel is on; `None` for other views (organizations).
fn subject(query: &PageQuery) -> Option<Subject> {
    // `selectedIds` names the entity; `id` is usually the extension's runtime id, but older
    // loaders put the entity there.
    let id = query
        .selected_ids
        .as_deref()
        .and_then(|ids| ids.split(',').next())
        .or(query.id.as_deref())
        .and_then(|id| id.trim().parse::<i64>().ok())
        .filter(|id| *id > 0)?;
    match query.resource.as_deref().map(str::trim) {
        Some("person") => Some(Subject::Person(id)),
        Some("deal") => Some(Subject::Deal(id)),
        _ => None,
    }
}

/// The panel page.
pub async fn page(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    let viewer = match page_viewer(&state, &query) {
        Ok(viewer) => viewer,
        Err(error) => return refused(&error),
    };
    let Some(subject) = subject(&query) else {
        return notice(
            StatusCode::OK,
            "WhatsApp",
            "This panel shows WhatsApp conversations on person and deal pages.",
        );
    };
    match render(&state, viewer.company_id, viewer.user_id, subject).await {
        Ok(response) => response,
        Err(error) => failed(&state, error),
    }
}

/// Why the panel cannot show threads.
#[derive(Debug, thiserror::Error)]
enum PanelError {
    #[error("no active installation in the company")]
    NotInstalled,
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

async fn render(
    state: &AppState,
    company_id: i64,
    user_id: i64,
    subject: Subject,
) -> Result<Response, PanelError> {
    let installation = installations::acting_for(&state.db, company_id, user_id)
        .await?
        .ok_or(PanelError::NotInstalled)?;
    let person = person::fetch(&state.pipedrive, installation, subject).await?;
    let region = channels::list(&state.db)
        .await?
        .iter()
        .filter(|c| c.company_id == Some(company_id))
        .find_map(|c| c.display_phone_number.as_deref().and_then(person::region_of));
    let wa_ids = person::wa_ids(&person.phones, region.as_deref());
    let found = if wa_ids.is_empty() {
        Vec::new()
    } else {
        conversations::of_wa_ids_in_company(&state.db, company_id, &wa_ids).await?
    };
    let links = Links {
        keys: &state.keys,
        public_url: &state.config.public_url,
    };
    let threads = thread::load(&state.db, links, &found).await?;
    let name = if person.name.is_empty() {
        "this person".to_string()
    } else {
        person.name.clone()
    };
    Ok(chat_page(
        StatusCode::OK,
        "WhatsApp",
        &body(&name, &wa_ids, &threads),
    ))
}

fn body(name: &str, wa_ids: &[String], threads: &[Thread]) -> String {
    let version = thread::version(threads.iter().map(|t| t.html.as_str()));
    let empty = if wa_ids.is_empty() {
        format!(
            "{} has no phone number in Pipedrive; add one to see their WhatsApp conversations here.",
            escape(name)
        )
    } else {
        format!(
            "No WhatsApp conversation with {} yet. It appears here when they write to one of your numbers.",
            escape(name)
        )
    };
    format!(
        "<main id=\"chat\" data-view=\"panel\" data-phones=\"{phones}\" data-version=\"{version}\">\
<p class=\"empty\"{hidden}>{empty}</p><div class=\"threads\">{threads}</div></main>",
        phones = wa_ids.join(","),
        hidden = if threads.is_empty() { "" } else { " hidden" },
        threads = threads.iter().map(|t| t.html.as_str()).collect::<String>(),
    )
}

/// The page for a panel that cannot be shown: what the user can do about it, never internals.
fn failed(state: &AppState, error: PanelError) -> Response {
    let install = state.config.public_url.join("/auth/pipedrive");
    let (status, message) = match &error {
        PanelError::NotInstalled
        | PanelError::Lookup(LookupError::Pipedrive(PipedriveError::NeedsReauth { .. })) => (
            StatusCode::FORBIDDEN,
            format!("The app has no working access to your Pipedrive company. Install it again: {install}"),
        ),
        PanelError::Lookup(LookupError::NoPerson) => (
            StatusCode::OK,
            "This deal has no contact person; add one to see their WhatsApp conversations.".into(),
        ),
        PanelError::Lookup(LookupError::Pipedrive(PipedriveError::Gone { .. })) => (
            StatusCode::NOT_FOUND,
            "Pipedrive no longer has this person or deal.".into(),
        ),
        PanelError::Lookup(LookupError::Pipedrive(PipedriveError::RateLimited { .. })) => (
            StatusCode::TOO_MANY_REQUESTS,
            "Pipedrive's rate limit is reached for now; reload in a minute.".into(),
        ),
        PanelError::Lookup(_) => (
            StatusCode::BAD_GATEWAY,
            "Pipedrive could not be reached; reload to try again.".into(),
        ),
        PanelError::Database(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The conversation history is unavailable right now; reload to try again.".into(),
        ),
    };
    tracing::warn!(%error, status = status.as_u16(), "chat panel not shown");
    notice(status, "WhatsApp", &message)
}
