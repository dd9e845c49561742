//! `/ui/api/…`: what the chat's script calls, as the viewer its bearer token names, limited to
//! the conversations on that viewer's company's numbers. Reads answer `{"changed": false}` when
//! the caller's `since` fingerprint is still current, so polling stays cheap.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::thread::{self, Links};
use super::{ApiViewer, floating};
use crate::http::error::ApiError;
use crate::http::upload::{self, multipart_error};
use crate::state::AppState;
use crate::store::channels;
use crate::store::conversations::{self, ConversationRow};
use crate::whatsapp::outbound::NewFile;
use crate::whatsapp::{reply, templates};

/// Phone numbers one panel may follow.
const MAX_PHONES: usize = 30;

/// A poll: the fingerprint the page already shows.
#[derive(Debug, Deserialize)]
pub struct Since {
    since: Option<String>,
}

/// The panel's poll: the phone digits it follows.
#[derive(Debug, Deserialize)]
pub struct ThreadsQuery {
    phones: Option<String>,
    since: Option<String>,
}

fn links(state: &AppState) -> Links<'_> {
    Links {
        keys: &state.keys,
        public_url: &state.config.public_url,
    }
}

/// The answer to a poll: `{"version", "changed": false}` when the caller's `since` is still
/// current, else `{"version", "changed": true, <name>: data}`.
fn poll_answer(
    since: Option<&str>,
    version: &str,
    name: &str,
    data: impl serde::Serialize,
) -> Result<Json<Value>, ApiError> {
    let mut body = json!({"version": version, "changed": since != Some(version)});
    if since != Some(version) {
        body[name] = serde_json::to_value(data).map_err(ApiError::internal)?;
    }
    Ok(Json(body))
}

/// `GET /ui/api/threads?phones=…&since=…`: the threads of these customers.
pub async fn threads(
    ApiViewer(viewer): ApiViewer,
    State(state): State<AppState>,
    Query(query): Query<ThreadsQuery>,
) -> Result<Json<Value>, ApiError> {
    let phones: Vec<String> = query
        .phones
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = phones.iter().find(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ApiError::BadRequest(format!(
            "phones: {bad:?} is not a WhatsApp id (digits only)"
        )));
    }
    if phones.len() > MAX_PHONES {
        return Err(ApiError::BadRequest(format!(
            "phones: at most {MAX_PHONES} numbers"
        )));
    }
    let found = if phones.is_empty() {
        Vec::new()
    } else {
        conversations::of_wa_ids_in_company(&state.db, viewer.company_id, &phones).await?
    };
    let threads = thread::load(&state.db, links(&state), &found).await?;
    let version = thread::version(threads.iter().map(|t| t.html.as_str()));
    poll_answer(query.since.as_deref(), &version, "threads", threads)
}

/// `GET /ui/api/conversations?since=…`: the floating window's list and unseen count.
pub async fn conversations(
    ApiViewer(viewer): ApiViewer,
    State(state): State<AppState>,
    Query(query): Query<Since>,
) -> Result<Json<Value>, ApiError> {
    let inbox = floating::inbox(&state, viewer.company_id).await?;
    let Json(mut body) = poll_answer(query.since.as_deref(), &inbox.version, "inbox", &inbox)?;
    // The badge count goes along even when the list is unchanged.
    body["unseen"] = json!(inbox.unseen);
    Ok(Json(body))
}

async fn conversation_of(state: &AppState, company_id: i64, id: &str) -> Result<ConversationRow, ApiError> {
    let unknown = || ApiError::NotFound(format!("Unknown conversation {id}"));
    let id = Uuid::try_parse(id).map_err(|_| unknown())?;
    conversations::find_in_company(&state.db, company_id, id)
        .await?
        .ok_or_else(unknown)
}

/// `GET /ui/api/conversations/{id}?since=…`: one thread.
pub async fn conversation(
    ApiViewer(viewer): ApiViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<Since>,
) -> Result<Json<Value>, ApiError> {
    let row = conversation_of(&state, viewer.company_id, &id).await?;
    let thread = thread::load(&state.db, links(&state), std::slice::from_ref(&row))
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a loaded conversation has no thread")))?;
    let version = thread::version([thread.html.as_str()]);
    poll_answer(query.since.as_deref(), &version, "thread", thread)
}

/// `POST /ui/api/conversations/{id}/seen`: a salesperson opened the thread.
pub async fn seen(
    ApiViewer(viewer): ApiViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = conversation_of(&state, viewer.company_id, &id).await?;
    conversations::mark_seen(&state.db, row.id).await?;
    Ok(Json(json!({"id": row.id, "seen": true})))
}

/// `GET /ui/api/templates`: the approved templates and their placeholders, for the picker.
pub async fn templates(
    ApiViewer(_): ApiViewer,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = reply::recognisable_templates(&state, false)
        .await?
        .iter()
        .map(|t| {
            json!({"id": t.id, "name": t.name, "language": t.language, "body": t.body_text,
                   "placeholders": templates::placeholders(t)})
        })
        .collect();
    Ok(Json(json!({"templates": list})))
}

/// The reply box, as sent.
#[derive(Default)]
struct ReplyForm {
    text: String,
    files: Vec<NewFile>,
    template: Option<String>,
    params: HashMap<String, String>,
}

async fn read_form(mut multipart: Multipart) -> Result<ReplyForm, ApiError> {
    let mut form = ReplyForm::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "text" => form.text = upload::text(field, "text").await?,
            "file" => {
                let file = upload::file(field).await?;
                // An empty file input still sends a nameless, empty part.
                if !file.content.is_empty() || file.filename.as_deref().is_some_and(|n| !n.is_empty()) {
                    form.files.push(file);
                }
            }
            "template" => {
                let id = upload::text(field, "template").await?;
                form.template = Some(id.trim().to_string()).filter(|t| !t.is_empty());
            }
            other => match other.strip_prefix("param.") {
                Some(placeholder) => {
                    let value = upload::text(field, &name).await?;
                    form.params.insert(placeholder.to_string(), value);
                }
                None => tracing::info!(field = other, "chat reply: unknown form field ignored"),
            },
        }
    }
    Ok(form)
}

/// `POST /ui/api/conversations/{id}/messages` (multipart: `text`, `file`…, or `template` with
/// `param.<name>` values): sends a reply the way postMessage does.
pub async fn send(
    ApiViewer(viewer): ApiViewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    multipart: Multipart,
) -> Result<Json<Value>, ApiError> {
    let conversation = conversation_of(&state, viewer.company_id, &id).await?;
    let channel = channels::find(&state.db, conversation.channel_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Unknown conversation {id}")))?;
    let form = read_form(multipart).await?;
    let (text, candidates) = match &form.template {
        Some(template_id) => {
            if !form.files.is_empty() {
                return Err(ApiError::BadRequest(
                    "files: a template message cannot carry files".into(),
                ));
            }
            let template = reply::recognisable_templates(&state, false)
                .await?
                .into_iter()
                .find(|t| &t.id == template_id)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "template: {template_id} is not an approved template (any more)"
                    ))
                })?;
            let text = templates::fill_in(&template, &form.params).map_err(|name| {
                ApiError::BadRequest(format!("param.{name}: fill in {{{{{name}}}}} of the template"))
            })?;
            (text, vec![template])
        }
        None => {
            let candidates = reply::recognisable_templates(&state, !form.files.is_empty()).await?;
            (form.text, candidates)
        }
    };
    tracing::info!(user_id = viewer.user_id, "reply from the chat panel");
    let message_id = reply::send(&state, &channel, &conversation, &text, form.files, &candidates).await?;
    Ok(Json(json!({"id": message_id})))
}
