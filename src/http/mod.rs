//! The HTTP surface: every route of the service assembled in one place, and the middleware
//! every request passes through (request id, trace span, metrics, timeout, body limit, panic
//! guard, JSON errors, `nosniff`). No CORS layer: nothing here is meant to be read by scripts
//! of other origins.

pub mod assets;
pub mod basic_auth;
pub mod error;
pub mod html;
pub mod json_object;
mod manifests;
mod ops;
pub mod read_limit;
pub mod upload;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::state::AppState;

/// Bodies larger than this are refused unless a route sets its own limit.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Requests still running after this are answered 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// All routes with their middleware.
pub fn router(state: AppState) -> Router {
    let open = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/manifests/messaging.json", get(manifests::messaging))
        .route("/manifests/video-calling.json", get(manifests::video_calling))
        .route(assets::CHANNEL_ICON_PATH, get(assets::channel_icon))
        .merge(crate::pipedrive::router());

    let provider = Router::new()
        .merge(
            crate::pipedrive::provider::reads()
                .route_layer(from_fn_with_state(state.clone(), read_limit::limit_reads)),
        )
        .merge(crate::pipedrive::provider::writes())
        .route_layer(from_fn(error::outage_as_rate_limit));

    // Routes Pipedrive calls with the app's client id and secret (HTTP Basic).
    let pipedrive_facing = Router::new()
        .merge(provider)
        .merge(crate::video::router())
        .route_layer(from_fn_with_state(state.clone(), basic_auth::require_pipedrive));

    Router::new()
        .merge(open)
        .merge(crate::whatsapp::webhook::router())
        .merge(crate::media::serve::router())
        .merge(crate::avatar::router())
        .merge(crate::ui::router())
        .merge(pipedrive_facing)
        .fallback(error::no_route)
        .route_layer(from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    header::COOKIE,
                    HeaderName::from_static("x-hub-signature-256"),
                ]))
                // Browsers must take every answer as the type it declares (a challenge echoed
                // as text, a file served as a download), never sniff it into a page.
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(make_span)
                        .on_request(())
                        .on_response(on_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(error::panic_response))
                .layer(from_fn(error::normalize_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                )),
        )
        .with_state(state)
}

/// The span of one request. Only the path is recorded: query strings carry OAuth codes and
/// link signatures.
fn make_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
    )
}

fn on_response<B>(response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_server_error() {
        tracing::warn!(status, latency_ms, "request failed");
    } else if response.status().is_client_error() {
        tracing::info!(status, latency_ms, "request refused");
    } else {
        tracing::debug!(status, latency_ms, "request served");
    }
}
