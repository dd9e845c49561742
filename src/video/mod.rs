//! Pipedrive's video calling app extension: `postMeeting`, `patchUpdateMeeting` and
//! `deleteMeeting` for a user provider link (`:linkId`), with each meeting in its own Jitsi Meet
//! room. The routes sit behind the Pipedrive Basic-auth middleware (see `http::router`).

pub mod jitsi;
pub mod meeting;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{patch, post};
use axum::{Json, Router};
use serde::Serialize;
use uuid::Uuid;

use self::meeting::{InvalidMeeting, MeetingChanges, MeetingDetails};
use crate::http::error::ApiError;
use crate::http::json_object::JsonObject;
use crate::state::AppState;
use crate::store::meetings::{self, NewMeeting};

/// The three manifest endpoints (paths as written in `manifests/video-calling.json`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/video/{link_id}/meetings", post(create))
        .route(
            "/api/video/{link_id}/meetings/{meeting_id}",
            patch(update).delete(delete),
        )
}

/// The `data` of a `postMeeting` answer. `password` is left out: the room name is the secret.
#[derive(Debug, Serialize)]
struct CreatedMeeting {
    meeting_id: String,
    join_url: String,
    invitation: String,
}

/// The contract's success envelope.
#[derive(Debug, Serialize)]
struct Success<T> {
    success: bool,
    data: T,
}

impl From<InvalidMeeting> for ApiError {
    fn from(error: InvalidMeeting) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

/// `postMeeting`: a new meeting in a fresh room; 201 with its id, link and invitation.
#[tracing::instrument(skip_all, fields(link_id = %link_id))]
async fn create(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Success<CreatedMeeting>>), ApiError> {
    let link_id = active_link(&state, &link_id).await?;
    let details = MeetingDetails::from_json(&body)?;
    let id = Uuid::now_v7().to_string();
    let room = meeting::room_name(&details.topic);
    let join_url = state
        .jitsi
        .join_url(&room, details.start_time, details.end_time())
        .map_err(ApiError::internal)?;
    meetings::insert(
        &state.db,
        &NewMeeting {
            id: &id,
            link_id,
            topic: &details.topic,
            start_time: details.start_time,
            duration_minutes: details.duration_minutes,
            room: &room,
        },
    )
    .await?;
    tracing::info!(meeting_id = %id, "meeting created");
    let invitation = meeting::invitation(&details, &join_url);
    Ok((
        StatusCode::CREATED,
        Json(Success {
            success: true,
            data: CreatedMeeting {
                meeting_id: id,
                join_url,
                invitation,
            },
        }),
    ))
}

/// `patchUpdateMeeting`: new topic, time or length for the same room (links already shared keep
/// working); 204.
#[tracing::instrument(skip_all, fields(link_id = %link_id, meeting_id = %meeting_id))]
async fn update(
    State(state): State<AppState>,
    Path((link_id, meeting_id)): Path<(String, String)>,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let link_id = active_link(&state, &link_id).await?;
    let changes = MeetingChanges::from_json(&body)?;
    let updated = meetings::update(
        &state.db,
        link_id,
        &meeting_id,
        changes.topic.as_deref(),
        changes.start_time,
        changes.duration_minutes,
    )
    .await?;
    if !updated {
        return Err(unknown_meeting());
    }
    tracing::info!("meeting updated");
    Ok(StatusCode::NO_CONTENT)
}

/// `deleteMeeting`: 204 when the link has (or had) the meeting, so a repeated call is harmless.
#[tracing::instrument(skip_all, fields(link_id = %link_id, meeting_id = %meeting_id))]
async fn delete(
    State(state): State<AppState>,
    Path((link_id, meeting_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let link_id = active_link(&state, &link_id).await?;
    if !meetings::delete(&state.db, link_id, &meeting_id).await? {
        return Err(unknown_meeting());
    }
    tracing::info!("meeting deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The id of a registered, not removed link; 404 otherwise.
async fn active_link(state: &AppState, link_id: &str) -> Result<Uuid, ApiError> {
    let unknown = || {
        ApiError::NotFound(
            "Unknown video calling link; connect the video calling app again in Pipedrive".into(),
        )
    };
    let id = Uuid::parse_str(link_id).map_err(|_| unknown())?;
    if meetings::link_is_active(&state.db, id).await? {
        Ok(id)
    } else {
        Err(unknown())
    }
}

fn unknown_meeting() -> ApiError {
    ApiError::NotFound("No such meeting on this video calling link".into())
}
