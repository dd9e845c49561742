//! `GET|POST /webhooks/whatsapp`: Meta's verification handshake and signed notifications.
//! A notification is acknowledged only once its raw body is committed to PostgreSQL (in a group
//! with the others arriving meanwhile, see [`super::intake`]); the ingest loop processes it
//! afterwards.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::limit::RequestBodyLimitLayer;

use super::signature;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Meta sends payloads of up to 3 MB.
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/whatsapp", get(verify).post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Refuses a body announced larger than the limit before reading any of it.
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
}

/// The handshake: 200 with `hub.challenge` as plain text when the mode is `subscribe` and the
/// verify token is ours; 403 otherwise.
async fn verify(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let token_ok = param("hub.verify_token").is_some_and(|token| {
        let expected = Sha256::digest(state.config.whatsapp.verify_token.expose_secret().as_bytes());
        bool::from(Sha256::digest(token.as_bytes()).ct_eq(&expected))
    });
    match (param("hub.mode"), param("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            tracing::info!("webhook verification handshake accepted");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                challenge.to_string(),
            )
                .into_response()
        }
        _ => {
            tracing::warn!("webhook verification handshake refused");
            ApiError::Forbidden("Verification refused: wrong hub.mode or hub.verify_token".into())
                .into_response()
        }
    }
}

/// A notification: verified, committed, then acknowledged.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let signature_header = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    let app_secret = state.config.whatsapp.app_secret.expose_secret().as_bytes();
    if let Err(error) = signature::verify(app_secret, signature_header, &body) {
        metrics::counter!("webhooks_rejected_total", "reason" => "signature").increment(1);
        tracing::warn!(%error, "webhook refused");
        return Err(ApiError::Unauthorized(format!(
            "Invalid webhook signature: {error}"
        )));
    }
    if let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        metrics::counter!("webhooks_rejected_total", "reason" => "json").increment(1);
        tracing::warn!(%error, bytes = body.len(), "signed webhook body is not JSON");
        return Err(ApiError::BadRequest(format!(
            "The body is not valid JSON: {error}"
        )));
    }
    let id = state.inbox.store(body).await?;
    state.ingest_wake.notify_one();
    metrics::counter!("webhooks_received_total").increment(1);
    tracing::debug!(event = id, "webhook stored");
    Ok(StatusCode::OK.into_response())
}
