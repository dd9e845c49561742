//! `GET /ui/floating`: the floating window, Pipedrive's inbox for WhatsApp: the company's recent
//! conversations (unseen first), one thread at a time, and the apps-dock badge counting the
//! unseen ones.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use uuid::Uuid;

use super::thread::{self, customer_name};
use super::{PageQuery, chat_page, notice, page_viewer, refused};
use crate::http::html::escape;
use crate::state::AppState;
use crate::store::conversations::{self, ConversationRow};
use crate::store::messages;

/// Conversations listed.
const LISTED: i64 = 50;

/// The list of recent conversations.
#[derive(Debug, Clone, Serialize)]
pub struct Inbox {
    /// Fingerprint of `html` (the poll's own `version`).
    #[serde(skip)]
    pub version: String,
    /// Conversations nobody has seen yet (all of the company's, not only the listed ones).
    pub unseen: i64,
    /// The listed conversations, unseen first, then newest first.
    pub conversations: Vec<Entry>,
    /// The list rendered for the page.
    pub html: String,
}

/// One listed conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Our conversation id.
    pub id: Uuid,
    /// The customer's WhatsApp name, or their number.
    pub customer: String,
    /// The latest message's text.
    pub preview: String,
    /// Whether a salesperson has looked at it.
    pub seen: bool,
    /// When the last message was sent.
    pub last_message_at: chrono::DateTime<chrono::Utc>,
}

/// The company's inbox.
pub async fn inbox(state: &AppState, company_id: i64) -> Result<Inbox, sqlx::Error> {
    let rows: Vec<ConversationRow> = conversations::recent_in_company(&state.db, company_id, LISTED).await?;
    let unseen = conversations::count_unseen_in_company(&state.db, company_id).await?;
    let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
    let mut previews: HashMap<Uuid, String> = messages::latest_of(&state.db, &ids, 1)
        .await?
        .into_iter()
        .map(|m| (m.conversation_id, m.body))
        .collect();
    let conversations: Vec<Entry> = rows
        .iter()
        .map(|c| Entry {
            id: c.id,
            customer: customer_name(c),
            preview: previews.remove(&c.id).unwrap_or_default(),
            seen: c.seen,
            last_message_at: c.last_message_at,
        })
        .collect();
    let html = render(&conversations);
    Ok(Inbox {
        version: thread::version([html.as_str()]),
        unseen,
        conversations,
        html,
    })
}

fn render(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "<p class=\"empty\">No WhatsApp conversations yet.</p>".into();
    }
    let mut html = String::from("<ul class=\"inbox\">");
    for e in entries {
        let preview: String = e.preview.chars().take(120).collect();
        let _ = write!(
            html,
            "<li class=\"entry{unseen}\"><button type=\"button\" data-open=\"{id}\">\
<span class=\"customer\">{customer}</span>{at}\
<span class=\"preview\">{preview}</span></button></li>",
            unseen = if e.seen { "" } else { " unseen" },
            id = e.id,
            customer = escape(&e.customer),
            at = thread::time(e.last_message_at),
            preview = escape(&preview),
        );
    }
    html.push_str("</ul>");
    html
}

/// The floating window page.
pub async fn page(State(state): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    let viewer = match page_viewer(&state, &query) {
        Ok(viewer) => viewer,
        Err(error) => return refused(&error),
    };
    match inbox(&state, viewer.company_id).await {
        Ok(inbox) => chat_page(
            StatusCode::OK,
            "WhatsApp",
            &format!(
                "<main id=\"chat\" data-view=\"floating\" data-version=\"{version}\" data-unseen=\"{unseen}\">\
<div class=\"list\">{list}</div><div class=\"open\" hidden><button type=\"button\" class=\"back\">← All conversations</button>\
<div class=\"threads\"></div></div></main>",
                version = inbox.version,
                unseen = inbox.unseen,
                list = inbox.html,
            ),
        ),
        Err(error) => {
            tracing::warn!(%error, "floating window not shown");
            notice(
                StatusCode::SERVICE_UNAVAILABLE,
                "WhatsApp",
                "The conversation history is unavailable right now; reload to try again.",
            )
        }
    }
}
