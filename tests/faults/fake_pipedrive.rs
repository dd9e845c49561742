//! A fake Pipedrive on loopback: the OAuth server, the company API the install uses, and the
//! Messaging inbox (`channels/messages/receive`) that records every delivery and answers as the
//! scenario tells it (accept, fail, rate-limit, answer slowly).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

/// App credentials of the test deployment.
pub const CLIENT_ID: &str = "faults-client-id";
pub const CLIENT_SECRET: &str = "faults-client-secret-5b9e17";
/// The authorization code the fake consent screen hands out.
pub const CODE: &str = "faults-oauth-code-c41d9a";
/// Tokens of the code exchange and of a refresh.
pub const ACCESS_1: &str = "v1u:faults-access-one-2e8f44";
pub const REFRESH_1: &str = "1:4242:faults-refresh-one-9a7c01";
pub const ACCESS_2: &str = "v1u:faults-access-two-71d3b6";
pub const REFRESH_2: &str = "1:4242:faults-refresh-two-0c55e2";
/// The installing user.
pub const COMPANY_ID: i64 = 4242;
pub const USER_ID: i64 = 777;

/// How the inbox answers deliveries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// 200 after the configured latency.
    Accept,
    /// This 5xx (or other) status.
    Fail(u16),
    /// 429 with `Retry-After` and rate-limit headers saying `seconds`.
    RateLimit {
        /// The wait Pipedrive asks for.
        seconds: u64,
    },
    /// Takes the delivery at once, answers 200 only after this long.
    Slow(Duration),
}

/// One `channels/messages/receive` call.
#[derive(Debug, Clone)]
pub struct Receive {
    /// When it arrived, relative to the fake's start.
    pub at: Duration,
    /// Our message id.
    pub id: String,
    /// sent, delivered, read or failed.
    pub status: String,
    /// The text.
    pub message: String,
    /// What the fake answered (200 means Pipedrive took it).
    pub answer: u16,
}

struct Shared {
    url: String,
    started: Instant,
    mode: Mutex<Mode>,
    latency: Mutex<Duration>,
    receives: Mutex<Vec<Receive>>,
    refreshes: Mutex<u32>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakePipedrive {
    /// `http://127.0.0.1:<port>`: OAuth server and API domain alike.
    pub url: String,
    shared: Arc<Shared>,
}

impl FakePipedrive {
    /// Starts it on a free port, accepting deliveries at once.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            started: Instant::now(),
            mode: Mutex::new(Mode::Accept),
            latency: Mutex::new(Duration::ZERO),
            receives: Mutex::new(Vec::new()),
            refreshes: Mutex::new(0),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v1/users/me", get(users_me))
            .route("/api/v1/channels", post(create_channel))
            .route("/api/v1/channels/messages/receive", post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, shared }
    }

    /// How the inbox answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// How long an accepted delivery takes to answer.
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock().unwrap() = latency;
    }

    /// Every delivery call so far, in arrival order.
    pub fn receives(&self) -> Vec<Receive> {
        self.shared.receives.lock().unwrap().clone()
    }

    /// Deliveries Pipedrive took (answered, or about to answer, 200).
    pub fn accepted(&self) -> Vec<Receive> {
        self.receives().into_iter().filter(|r| r.answer == 200).collect()
    }

    /// Refresh-token grants served.
    pub fn refreshes(&self) -> u32 {
        *self.shared.refreshes.lock().unwrap()
    }
}

fn basic_ok(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == ACCESS_1 || token == ACCESS_2)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"success": false, "error": "unauthorized"})),
    )
        .into_response()
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !basic_ok(&headers) {
        return unauthorized();
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (access, refresh) = match (field("grant_type"), field("code"), field("refresh_token")) {
        (Some("authorization_code"), Some(CODE), _) => (ACCESS_1, REFRESH_1),
        (Some("refresh_token"), _, Some(REFRESH_1 | REFRESH_2)) => {
            *shared.refreshes.lock().unwrap() += 1;
            (ACCESS_2, REFRESH_2)
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        }
    };
    axum::Json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 3599,
        "refresh_token": refresh, "scope": "base,messengers-integration", "api_domain": shared.url,
    }))
    .into_response()
}

async fn users_me(headers: HeaderMap) -> Response {
    if !bearer_ok(&headers) {
        return unauthorized();
    }
    axum::Json(json!({"success": true, "data": {
        "id": USER_ID, "company_id": COMPANY_ID, "company_name": "Faults Inc", "company_domain": "faults",
        "name": "Operator", "email": "operator@faults.test", "is_admin": 1}}))
    .into_response()
}

async fn create_channel(headers: HeaderMap, body: Bytes) -> Response {
    if !bearer_ok(&headers) {
        return unauthorized();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let provider_id = body["provider_channel_id"].as_str().unwrap_or_default();
    axum::Json(json!({"success": true, "data": {
        "id": format!("pd-channel-{provider_id}"), "name": body["name"], "provider_channel_id": provider_id}}))
    .into_response()
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if !bearer_ok(&headers) {
        return unauthorized();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mode = *shared.mode.lock().unwrap();
    let latency = *shared.latency.lock().unwrap();
    let answer = match mode {
        Mode::Accept | Mode::Slow(_) => 200,
        Mode::Fail(status) => status,
        Mode::RateLimit { .. } => 429,
    };
    shared.receives.lock().unwrap().push(Receive {
        at: shared.started.elapsed(),
        id: body["id"].as_str().unwrap_or_default().to_string(),
        status: body["status"].as_str().unwrap_or_default().to_string(),
        message: body["message"].as_str().unwrap_or_default().to_string(),
        answer,
    });
    match mode {
        Mode::Accept => {
            tokio::time::sleep(latency).await;
            axum::Json(json!({"success": true, "data": {"id": body["id"]}})).into_response()
        }
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(json!({"success": true, "data": {"id": body["id"]}})).into_response()
        }
        Mode::Fail(status) => (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"success": false, "error": "injected failure"})),
        )
            .into_response(),
        Mode::RateLimit { seconds } => (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", seconds.to_string()),
                ("x-ratelimit-limit", "40".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", seconds.to_string()),
            ],
            axum::Json(json!({"success": false, "error": "Rate limit exceeded"})),
        )
            .into_response(),
    }
}
