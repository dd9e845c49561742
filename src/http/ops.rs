//! Operational endpoints: liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;
use crate::store;

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers and carries every migration; 503 otherwise. Also
/// lists the installations waiting for a new consent (which do not make the service unready).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = store::status(&state.db).await;
    let ready = database.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let installations = if ready {
        store::installations::summary(&state.db).await.ok()
    } else {
        None
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": database,
        "installations": installations,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
