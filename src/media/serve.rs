//! `GET|HEAD /media/{id}?exp=…&sig=…`: stored attachment bytes behind an expiring HMAC link.
//! The bytes come from PostgreSQL, never from a path, and are served so that a hostile file
//! cannot run as a page of ours.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use crate::crypto::LinkError;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::attachments;

/// The media routes (files and their viewer pages).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/media/{id}", get(serve))
        .merge(super::view::router())
}

#[derive(Deserialize)]
struct Link {
    exp: Option<i64>,
    sig: Option<String>,
}

/// Types a browser may show inline; everything else is a download.
fn inline(mime_type: &str) -> bool {
    let base = super::base_type(mime_type);
    matches!(
        base.as_str(),
        "image/jpeg" | "image/png" | "image/webp" | "image/gif" | "application/pdf"
    ) || base.starts_with("audio/")
        || base.starts_with("video/")
}

async fn serve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(link): Query<Link>,
) -> Result<Response, ApiError> {
    let refused = |why: &str| ApiError::Forbidden(format!("Media link refused: {why}"));
    let (Some(exp), Some(sig)) = (link.exp, link.sig) else {
        return Err(refused("it is not signed"));
    };
    let id = Uuid::parse_str(&id).map_err(|_| refused("the link signature is not valid"))?;
    state
        .keys
        .verify_link(&super::path(id), exp, &sig, Utc::now().timestamp())
        .map_err(|e| match e {
            LinkError::Expired => refused("the link has expired; ask for a fresh one"),
            LinkError::BadSignature => refused("the link signature is not valid"),
        })?;
    let content = attachments::content(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("This file is not available (yet)".into()))?;
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline(&content.mime_type) {
            "inline"
        } else {
            "attachment"
        },
        url::form_urlencoded::byte_serialize(content.filename.as_deref().unwrap_or("file").as_bytes())
            .collect::<String>()
            .replace('+', "%20"),
    );
    let content_type = HeaderValue::from_str(&content.mime_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let mut response = content.content.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; img-src 'self'; media-src 'self'; sandbox"),
    );
    Ok(response)
}
