//! `GET /manifests/*.json`: the manifests to upload in Pipedrive's Developer Hub, as
//! `pipedrive-whatsapp manifest …` prints them.

use axum::Json;
use axum::extract::State;

use crate::manifest::{self, Extension};
use crate::state::AppState;

/// The messaging app-extension manifest.
pub async fn messaging(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(render(&state, Extension::Messaging))
}

/// The video-calling app-extension manifest.
pub async fn video_calling(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(render(&state, Extension::Video))
}

fn render(state: &AppState, extension: Extension) -> serde_json::Value {
    manifest::render(
        extension,
        &state.config.public_url,
        &state.config.pipedrive.client_id,
    )
}
