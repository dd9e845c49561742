//! `GET /media/{id}/view?exp=…&sig=…`: a small page showing one stored file (picture, video or
//! audio player, and a download link) behind a long-lived signed link, for the CRM notes. The
//! file itself is fetched through a fresh short-lived link of [`super::serve`].

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::crypto::LinkError;
use crate::http::html::{escape, page};
use crate::state::AppState;
use crate::store::attachments::{self, AttachmentStatus};

/// Pictures and players load from us; nothing else runs or loads.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'";

/// How long the file link on the page stays valid.
const FILE_LINK_TTL_SECONDS: i64 = 3600;

/// The viewer route.
pub fn router() -> Router<AppState> {
    Router::new().route("/media/{id}/view", get(view))
}

#[derive(Deserialize)]
struct Link {
    exp: Option<i64>,
    sig: Option<String>,
}

async fn view(State(state): State<AppState>, Path(id): Path<String>, Query(link): Query<Link>) -> Response {
    let refused = |why: &str| {
        page(
            StatusCode::FORBIDDEN,
            "This link is not valid",
            &format!("<p>{}</p>", escape(why)),
        )
    };
    let (Some(exp), Some(sig), Ok(id)) = (link.exp, link.sig, Uuid::parse_str(&id)) else {
        return refused("The link is incomplete; open it again from Pipedrive.");
    };
    if let Err(error) = state
        .keys
        .verify_link(&super::view_path(id), exp, &sig, Utc::now().timestamp())
    {
        return refused(match error {
            LinkError::Expired => "The link has expired.",
            LinkError::BadSignature => "The link signature is not valid; open it again from Pipedrive.",
        });
    }
    let attachment = match attachments::find(&state.db, id).await {
        Ok(Some(attachment)) => attachment,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "File not found",
                "<p>This file no longer exists here.</p>",
            );
        }
        Err(error) => {
            tracing::warn!(%error, "reading an attachment for its viewer failed");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "<p>The file cannot be read right now.</p>",
            );
        }
    };
    let name = attachment
        .filename
        .clone()
        .unwrap_or_else(|| attachment.mime_type.clone());
    let body = match attachment.status {
        AttachmentStatus::Stored => {
            let url = escape(&super::signed_url(
                &state.keys,
                &state.config.public_url,
                id,
                FILE_LINK_TTL_SECONDS,
            ));
            let mime = super::base_type(&attachment.mime_type);
            let player = if mime.starts_with("image/") {
                format!(
                    "<p><img src=\"{url}\" alt=\"{}\" style=\"max-width:100%\"></p>",
                    escape(&name)
                )
            } else if mime.starts_with("video/") {
                format!("<p><video controls src=\"{url}\" style=\"max-width:100%\"></video></p>")
            } else if mime.starts_with("audio/") {
                format!("<p><audio controls src=\"{url}\"></audio></p>")
            } else {
                String::new()
            };
            format!(
                "{player}<p><a href=\"{url}\">Download {}</a> <small>({})</small></p>",
                escape(&name),
                escape(&attachment.mime_type)
            )
        }
        AttachmentStatus::Pending => {
            "<p>The file is still being fetched from WhatsApp; reload in a moment.</p>".into()
        }
        AttachmentStatus::Failed => {
            "<p>WhatsApp could not provide this file; ask the customer to send it again.</p>".into()
        }
    };
    let mut response = page(StatusCode::OK, &name, &body);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}
