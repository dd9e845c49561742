//! HTTP handlers of the install flow and of Pipedrive's calls about installations: the OAuth
//! start and callback (`GET`), the uninstall notice (`DELETE`) and the sharing state (`POST`).
//! Channel removal (`deleteChannelById`) is a provider endpoint, in `provider`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::install::{self, VideoLink};
use super::oauth::{self, CALLBACK_PATH, RedeemError};
use super::page;
use crate::http::error::ApiError;
use crate::http::html;
use crate::state::AppState;
use crate::store;

/// Where a browser starts the install (the app's Installation URL in Developer Hub).
pub const START_PATH: &str = "/auth/pipedrive";

/// The browser-facing install routes and Pipedrive's notices on the callback URL.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(START_PATH, get(start))
        .route(CALLBACK_PATH, get(callback).post(sharing).delete(uninstall))
}

/// `GET /auth/pipedrive`: redirects to Pipedrive's consent screen with a fresh signed state.
async fn start(State(state): State<AppState>) -> Response {
    let state_param = oauth::issue_state(&state.keys, Utc::now());
    let url = state.pipedrive.oauth().authorize_url(state_param);
    let mut response = Redirect::to(url.as_str()).into_response();
    html::secure(&mut response);
    response
}

/// Query of the OAuth redirect back to us.
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/pipedrive/callback`: checks the state, completes the install, shows the result.
async fn callback(
    State(state): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Response {
    let install_url = state.config.public_url.join(START_PATH);
    let Ok(Query(query)) = query else {
        let cause =
            "The address Pipedrive sent you back with is malformed (a parameter is repeated or unreadable).";
        return page::failed(StatusCode::BAD_REQUEST, cause, &install_url);
    };
    if let Some(error) = query.error.as_deref() {
        if error == "user_denied" {
            return page::denied(&install_url);
        }
        let cause = format!("Pipedrive reported an error: {error}");
        return page::failed(StatusCode::BAD_REQUEST, &cause, &install_url);
    }
    match oauth::redeem_state(&state.db, &state.keys, query.state.as_deref()).await {
        Ok(()) => {}
        Err(RedeemError::State(error)) => {
            tracing::info!(%error, "OAuth callback refused");
            let cause = format!("This installation request cannot be accepted: {error}.");
            return page::failed(StatusCode::BAD_REQUEST, &cause, &install_url);
        }
        Err(RedeemError::Database(error)) => {
            tracing::error!(%error, "cannot redeem the OAuth state");
            let cause = "The service's database is unavailable; try again in a minute.";
            return page::failed(StatusCode::SERVICE_UNAVAILABLE, cause, &install_url);
        }
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        let cause = "Pipedrive's redirect carries no authorization code.";
        return page::failed(StatusCode::BAD_REQUEST, cause, &install_url);
    };
    match install::complete(&state, code).await {
        Ok(report) => match &report.video {
            Some(VideoLink::Registered {
                redirect: Some(url), ..
            }) => Redirect::to(url.as_str()).into_response(),
            _ => page::installed(&report, &install_url),
        },
        Err(error) => {
            tracing::warn!(%error, "install failed");
            let status = if install::is_client_error(&error) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::BAD_GATEWAY
            };
            page::failed(status, &error.to_string(), &install_url)
        }
    }
}

/// Pipedrive's uninstall notice.
#[derive(Debug, Deserialize)]
struct UninstallNotice {
    #[serde(deserialize_with = "pipedrive_id")]
    company_id: i64,
    #[serde(default, deserialize_with = "optional_pipedrive_id")]
    user_id: Option<i64>,
}

/// `DELETE /auth/pipedrive/callback`: the app was uninstalled for a user. Answers 200 for
/// unknown users too, so a repeated notice is harmless.
async fn uninstall(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.pipedrive_credentials.check(&headers)?;
    let notice: UninstallNotice = parse(&body, "uninstall notice")?;
    let done = install::uninstall(&state.db, notice.company_id, notice.user_id).await?;
    tracing::info!(
        company_id = notice.company_id,
        user_id = notice.user_id,
        installations = done.installations,
        channels = done.channels,
        video_links = done.video_links,
        "uninstalled in Pipedrive"
    );
    Ok(Json(json!({"success": true})))
}

/// Pipedrive's sharing-state notice.
#[derive(Debug, Deserialize)]
struct SharingNotice {
    #[serde(deserialize_with = "pipedrive_id")]
    company_id: i64,
    #[serde(default, deserialize_with = "optional_pipedrive_id")]
    user_id: Option<i64>,
    #[serde(rename = "isShared")]
    is_shared: bool,
}

/// `POST /auth/pipedrive/callback`: records whether the installation is shared company-wide.
/// Pipedrive does not document authenticating this call; credentials are checked when sent.
async fn sharing(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let authenticated = headers.contains_key(header::AUTHORIZATION);
    if authenticated {
        state.pipedrive_credentials.check(&headers)?;
    }
    let notice: SharingNotice = parse(&body, "sharing notice")?;
    let matched =
        store::installations::set_shared(&state.db, notice.company_id, notice.user_id, notice.is_shared)
            .await?;
    tracing::info!(
        company_id = notice.company_id,
        user_id = notice.user_id,
        is_shared = notice.is_shared,
        authenticated,
        matched,
        "sharing state recorded"
    );
    Ok(Json(json!({"success": true})))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("Invalid {what}: {e}")))
}

/// Pipedrive ids arrive as numbers (sometimes as numeric strings).
fn pipedrive_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    optional_pipedrive_id(deserializer)?.ok_or_else(|| serde::de::Error::custom("an id is required"))
}

fn optional_pipedrive_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("an id must be an integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("an id must be an integer")),
        Some(_) => Err(serde::de::Error::custom("an id must be an integer")),
    }
}
