//! Fake Pipedrive and Graph API on loopback, as lean as they can be so that the load generator
//! does not steal the CPU it is measuring: the OAuth server and company API the install needs,
//! and a Messaging inbox that timestamps every delivery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::clock;

/// App credentials of the load deployment.
pub const CLIENT_ID: &str = "load-client-id";
pub const CLIENT_SECRET: &str = "load-client-secret-4a1c";
/// The authorization code the fake consent screen hands out.
pub const CODE: &str = "load-oauth-code";
/// The WhatsApp access token the fake Graph API accepts.
pub const GRAPH_TOKEN: &str = "EAAG-load-token";

/// One delivery Pipedrive took: which load message, and when (nanoseconds on [`clock`]).
#[derive(Debug, Clone, Copy)]
pub struct Receive {
    /// The sequence number the load generator gave the message.
    pub seq: u64,
    /// Arrival time.
    pub at: u64,
}

struct Inbox {
    url: String,
    up: AtomicBool,
    refused: AtomicU64,
    receives: Mutex<Vec<Receive>>,
}

/// The fake Pipedrive (OAuth server and API domain on one address).
#[derive(Clone)]
pub struct FakePipedrive {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inbox: Arc<Inbox>,
}

impl FakePipedrive {
    /// Starts it on a free port, taking deliveries.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inbox = Arc::new(Inbox {
            url: url.clone(),
            up: AtomicBool::new(true),
            refused: AtomicU64::new(0),
            receives: Mutex::new(Vec::with_capacity(1 << 16)),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v1/users/me", get(users_me))
            .route("/api/v1/channels", post(create_channel))
            .route("/api/v1/channels/messages/receive", post(receive))
            .with_state(inbox.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { url, inbox })
    }

    /// While down, deliveries get 503 and are not recorded.
    pub fn set_up(&self, up: bool) {
        self.inbox.up.store(up, Ordering::SeqCst);
    }

    /// Deliveries refused while down.
    pub fn refused(&self) -> u64 {
        self.inbox.refused.load(Ordering::Relaxed)
    }

    /// Number of deliveries taken so far.
    pub fn taken(&self) -> usize {
        self.inbox.receives.lock().unwrap().len()
    }

    /// Every delivery taken so far, in arrival order.
    pub fn receives(&self) -> Vec<Receive> {
        self.inbox.receives.lock().unwrap().clone()
    }
}

async fn token(State(inbox): State<Arc<Inbox>>, body: Bytes) -> Response {
    let refresh = url::form_urlencoded::parse(&body).any(|(k, v)| k == "grant_type" && v == "refresh_token");
    let form_has_code = url::form_urlencoded::parse(&body).any(|(k, v)| k == "code" && v == CODE);
    if !refresh && !form_has_code {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    axum::Json(json!({
        "access_token": "v1u:load-access", "token_type": "Bearer", "expires_in": 3599,
        "refresh_token": "1:1:load-refresh", "scope": "base,messengers-integration", "api_domain": inbox.url,
    }))
    .into_response()
}

async fn users_me() -> Response {
    axum::Json(json!({"success": true, "data": {
        "id": 1, "company_id": 1, "company_name": "Load Inc", "company_domain": "load",
        "name": "Operator", "email": "operator@load.test", "is_admin": 1}}))
    .into_response()
}

async fn create_channel(body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let provider_id = body["provider_channel_id"].as_str().unwrap_or_default();
    axum::Json(json!({"success": true, "data": {
        "id": format!("pd-channel-{provider_id}"), "name": body["name"], "provider_channel_id": provider_id}}))
    .into_response()
}

#[derive(serde::Deserialize)]
struct Delivery<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow, default)]
    message: std::borrow::Cow<'a, str>,
}

async fn receive(State(inbox): State<Arc<Inbox>>, body: Bytes) -> Response {
    let at = clock::now();
    if !inbox.up.load(Ordering::SeqCst) {
        inbox.refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"success": false, "error": "down for the drain scenario"})),
        )
            .into_response();
    }
    let Ok(delivery) = serde_json::from_slice::<Delivery>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"success": false}))).into_response();
    };
    // Status updates of our own messages carry no load sequence number and are not counted.
    if let Some(seq) = crate::load::seq_of(&delivery.message) {
        inbox.receives.lock().unwrap().push(Receive { seq, at });
    }
    axum::Json(json!({"success": true, "data": {"id": delivery.id}})).into_response()
}

/// The fake Graph API: the phone number's details and an empty template list, which is all the
/// install and start-up ask for.
pub async fn start_graph() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route(
            "/{version}/{id}",
            get(|| async {
                axum::Json(json!({"id": "load", "display_phone_number": "+1 555-010-0000", "verified_name": "Load Support"}))
            }),
        )
        .route(
            "/{version}/{id}/message_templates",
            get(|| async { axum::Json(json!({"data": [], "paging": {}})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
