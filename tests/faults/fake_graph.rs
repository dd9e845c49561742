//! A fake Graph API on loopback: the numbers' details, message sends (answered with fresh
//! wamids), templates, and media with its download URL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The WhatsApp access token of the test deployment.
pub const ACCESS_TOKEN: &str = "EAAG-faults-whatsapp-token-8d21f0";
/// Bytes of every media object.
pub const MEDIA_BYTES: &[u8] = b"\x89PNG fault-test image bytes";

struct Shared {
    url: String,
    sends: AtomicU64,
    send_latency: Mutex<Duration>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeGraph {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakeGraph {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            sends: AtomicU64::new(0),
            send_latency: Mutex::new(Duration::ZERO),
        });
        let app = Router::new()
            .route("/{version}/{id}", get(object))
            .route("/{version}/{id}/messages", axum::routing::post(send))
            .route("/{version}/{id}/message_templates", get(templates))
            .route("/cdn/{id}", get(cdn))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// Message sends received so far.
    pub fn sends(&self) -> u64 {
        self.shared.sends.load(Ordering::SeqCst)
    }

    /// How long a send takes to answer.
    pub fn set_send_latency(&self, latency: Duration) {
        *self.shared.send_latency.lock().unwrap() = latency;
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {ACCESS_TOKEN}").as_bytes())
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"message": "Invalid OAuth access token", "type": "OAuthException", "code": 190}})),
    )
        .into_response()
}

/// A phone number's details, or a media object's (ids starting with `media-`).
async fn object(
    State(shared): State<Arc<Shared>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    if id.starts_with("media-") {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(MEDIA_BYTES));
        return axum::Json(
            json!({"messaging_product": "whatsapp", "id": id, "mime_type": "image/png",
            "url": format!("{}/cdn/{id}", shared.url), "sha256": sha, "file_size": MEDIA_BYTES.len()}),
        )
        .into_response();
    }
    let last = id.chars().last().unwrap_or('0');
    axum::Json(json!({"id": id, "display_phone_number": format!("+1 555-010-000{last}"), "verified_name": "Faults Support"}))
        .into_response()
}

async fn send(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let wamid = format!("wamid.OUT.{}", shared.sends.fetch_add(1, Ordering::SeqCst) + 1);
    let latency = *shared.send_latency.lock().unwrap();
    tokio::time::sleep(latency).await;
    axum::Json(json!({"messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}], "messages": [{"id": wamid}]}))
    .into_response()
}

async fn templates(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    axum::Json(json!({"data": [], "paging": {}})).into_response()
}

async fn cdn(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    ([("content-type", "image/png")], MEDIA_BYTES).into_response()
}
