//! A test deployment: a database, the fake Pipedrive and Graph API, the environment the service
//! runs with, the OAuth install, and Meta's side of webhooks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::multipart::Form;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::database::{fresh_database, server_url};
use crate::fake_graph::{self, FakeGraph};
use crate::fake_pipedrive::{self, FakePipedrive};
use crate::ledger::Tally;
use crate::service::{Service, free_port};

/// The Meta app secret (webhook signatures) and verify token of the deployment.
pub const APP_SECRET: &str = "faults-meta-app-secret-3f6a90";
pub const VERIFY_TOKEN: &str = "faults-verify-token-b7e2d5";
/// The numbers it serves.
pub const PHONE_NUMBER_ID: &str = "109876543219001";
pub const WABA_ID: &str = "231005551239001";
/// 32 bytes of base64.
pub const SECRET_KEY: &str = "Zm9yLWZhdWx0LXRlc3RzLW9ubHktMzItYnl0ZXMhISE=";

/// Everything but the service process.
pub struct Deployment {
    /// A pool on the service's database, for checks.
    pub db: PgPool,
    /// Fake Pipedrive.
    pub pipedrive: FakePipedrive,
    /// Fake Graph API.
    pub graph: FakeGraph,
    /// The service's environment (without `LISTEN_ADDR`/`PUBLIC_URL`, set per process).
    pub env: HashMap<String, String>,
    /// Plain client (no redirects followed).
    pub client: reqwest::Client,
}

impl Deployment {
    /// A deployment on a fresh database of the shared test server.
    pub async fn new() -> Self {
        Self::on_server(&server_url()).await
    }

    /// A deployment on a fresh database of the server at `server`.
    pub async fn on_server(server: &str) -> Self {
        let database_url = fresh_database(server).await;
        let pipedrive = FakePipedrive::start().await;
        let graph = FakeGraph::start().await;
        let env = [
            ("DATABASE_URL", database_url.as_str()),
            ("PIPEDRIVE_CLIENT_ID", fake_pipedrive::CLIENT_ID),
            ("PIPEDRIVE_CLIENT_SECRET", fake_pipedrive::CLIENT_SECRET),
            ("PIPEDRIVE_OAUTH_URL", pipedrive.url.as_str()),
            ("WHATSAPP_ACCESS_TOKEN", fake_graph::ACCESS_TOKEN),
            ("WHATSAPP_APP_SECRET", APP_SECRET),
            ("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN),
            ("WHATSAPP_PHONE_NUMBER_IDS", PHONE_NUMBER_ID),
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA_ID),
            ("WHATSAPP_GRAPH_URL", graph.url.as_str()),
            ("SECRET_KEY", SECRET_KEY),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            // Quick retries and leases, so each scenario takes seconds rather than hours.
            ("QUEUE_RETRY_BASE_SECONDS", "0.1"),
            ("QUEUE_RETRY_MAX_SECONDS", "1"),
            ("QUEUE_MAX_ATTEMPTS", "200"),
            ("QUEUE_LEASE_SECONDS", "5"),
            ("OUTBOUND_TIMEOUT_SECONDS", "2"),
            ("SHUTDOWN_GRACE_SECONDS", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Self {
            db: PgPool::connect(&database_url)
                .await
                .expect("connect to the test database"),
            pipedrive,
            graph,
            env,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Sets (or overrides) a variable of the service's environment.
    pub fn set(&mut self, var: &str, value: &str) {
        self.env.insert(var.into(), value.into());
    }

    /// Starts a service process on a free port and waits until it is ready.
    pub async fn start(&self) -> Service {
        Service::start(&self.env, free_port()).await
    }

    /// Walks through the OAuth install in a browser's place; the number becomes a channel.
    pub async fn install(&self, service: &Service) {
        let start = self
            .client
            .get(service.url("/auth/pipedrive"))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 303);
        let location = url::Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
        let state = location
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("the consent redirect carries a state");
        let mut callback = url::Url::parse(&service.url("/auth/pipedrive/callback")).unwrap();
        callback
            .query_pairs_mut()
            .append_pair("code", fake_pipedrive::CODE)
            .append_pair("state", &state);
        let done = self.client.get(callback).send().await.unwrap();
        assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
        let registered: Option<String> =
            sqlx::query_scalar("SELECT pipedrive_channel_id FROM channels WHERE phone_number_id = $1")
                .bind(PHONE_NUMBER_ID)
                .fetch_one(&self.db)
                .await
                .unwrap();
        assert!(registered.is_some(), "the number is a Pipedrive channel");
    }

    /// Posts a webhook body signed as Meta signs it; the status, or `None` when no answer came.
    pub async fn post_webhook(&self, service: &Service, body: &Value) -> Option<u16> {
        post_signed(&self.client, &service.url("/webhooks/whatsapp"), body).await
    }

    /// Waits until the inbox took every one of the `expected` texts.
    pub async fn wait_delivered(&self, expected: &[String], bound: Duration) {
        eventually(bound, "every message delivered", || async {
            Tally::of(&self.pipedrive.receives(), expected)
                .lost
                .is_empty()
                .then_some(())
        })
        .await;
    }

    /// Our conversation with customer `c`, and the customer's participant id.
    pub async fn conversation_of(&self, c: usize) -> (Uuid, Uuid) {
        sqlx::query_as(
            "SELECT v.id, v.contact_id FROM conversations v JOIN contacts k ON k.id = v.contact_id WHERE k.wa_id = $1",
        )
        .bind(customer(c))
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// A postMessage request as Pipedrive makes it: `text` to customer `c`.
    pub async fn reply(&self, service: &Service, c: usize, text: &str) -> reqwest::RequestBuilder {
        let (conversation, contact) = self.conversation_of(c).await;
        let form = Form::new()
            .text("message", text.to_string())
            .text("senderId", PHONE_NUMBER_ID)
            .text("conversationId", conversation.to_string())
            .text("recipientIds[]", contact.to_string());
        self.client
            .post(service.url(&format!("/api/channels/{PHONE_NUMBER_ID}/messages")))
            .basic_auth(fake_pipedrive::CLIENT_ID, Some(fake_pipedrive::CLIENT_SECRET))
            .multipart(form)
    }

    /// Jobs of `kind` per state.
    pub async fn job_states(&self, kind: &str) -> HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT state, count(*) FROM jobs WHERE kind = $1 GROUP BY state")
            .bind(kind)
            .fetch_all(&self.db)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }
}

/// Posts `body` to `url` with Meta's signature.
pub async fn post_signed(client: &reqwest::Client, url: &str, body: &Value) -> Option<u16> {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), &bytes);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .timeout(Duration::from_secs(10))
        .body(bytes)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Posts `body` until the service answers 200, as Meta retries; returns the refusals seen
/// (statuses, 0 for no answer). Panics when `bound` passes first.
pub async fn post_until_acknowledged(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    bound: Duration,
) -> Vec<u16> {
    let started = Instant::now();
    let mut refusals = Vec::new();
    loop {
        match post_signed(client, url, body).await {
            Some(200) => return refusals,
            other => refusals.push(other.unwrap_or(0)),
        }
        assert!(
            started.elapsed() < bound,
            "webhook not acknowledged within {bound:?}: {refusals:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The customer number of conversation `c`.
pub fn customer(c: usize) -> String {
    format!("55119{c:08}")
}

/// The text of message `m` of conversation `c`; unique, and readable back by [`parse_text`].
pub fn text(c: usize, m: usize) -> String {
    format!("c{c:03}-m{m:04}")
}

/// Conversation and message number of a text made by [`text`].
pub fn parse_text(text: &str) -> Option<(usize, usize)> {
    let (c, m) = text.strip_prefix('c')?.split_once("-m")?;
    Some((c.parse().ok()?, m.parse().ok()?))
}

/// A `messages` notification for our number carrying `value`'s fields.
pub fn notification(value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({"display_phone_number": "15550100001", "phone_number_id": PHONE_NUMBER_ID});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": value}]}]
    })
}

/// A notification carrying one message `item` (its type-specific part) from customer `c`, sent
/// a moment ago (the customer service window is open).
pub fn message_from(c: usize, wamid: &str, kind: &str, item: Value) -> Value {
    let from = customer(c);
    notification(json!({
        "contacts": [{"profile": {"name": format!("Customer {c}")}, "wa_id": from}],
        "messages": [{"from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
                      "type": kind, kind: item}],
    }))
}

/// A notification carrying text message `m` of conversation `c`.
pub fn inbound(c: usize, m: usize) -> Value {
    message_from(
        c,
        &format!("wamid.IN.{c}.{m}"),
        "text",
        json!({"body": text(c, m)}),
    )
}

/// A status notification for one of our outbound messages.
pub fn status(wamid: &str, status: &str, recipient: &str) -> Value {
    notification(json!({
        "statuses": [{"id": wamid, "status": status, "timestamp": "1763800100", "recipient_id": recipient}],
    }))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `bound`.
pub async fn eventually<T, F, Fut>(bound: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
