//! Starts the real application on a random port against a fresh PostgreSQL database, with fake
//! Pipedrive and Graph API servers on loopback, and talks HTTP to it.

use std::collections::HashMap;
use std::sync::Once;
use std::time::Duration;

use pipedrive_whatsapp::app::Application;
use pipedrive_whatsapp::config::Config;
use pipedrive_whatsapp::queue::{RetryPolicy, WorkerConfig};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use wiremock::MockServer;

/// Pipedrive app credentials the fake Pipedrive uses.
pub const CLIENT_ID: &str = "test-client-id";
pub const CLIENT_SECRET: &str = "test-client-secret";
/// WhatsApp settings of the test deployment.
pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const ACCESS_TOKEN: &str = "test-access-token";
pub const PHONE_NUMBER_IDS: [&str; 2] = ["109876543210001", "109876543210002"];
pub const WABA_ID: &str = "231005551230001";
/// 32 bytes of base64.
pub const SECRET_KEY: &str = "q8Z1pA0n3T9x6b2V5c7D4e1F0g9H8i7J6k5L4m3N2o0=";

/// A running application and its fakes.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// A pool on the test's own database.
    pub db: PgPool,
    /// Fake Pipedrive (OAuth server and company API).
    pub pipedrive: MockServer,
    /// Fake Graph API.
    pub graph: MockServer,
    /// The configuration the app runs with.
    pub config: Config,
    /// Plain HTTP client (no redirects followed).
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Whether this run writes the apps' logs (`TEST_LOG`); they are then filtered by `RUST_LOG`,
/// read with the rest of the test's configuration, as the service reads it.
fn logging(env: &mut HashMap<String, String>) -> bool {
    if std::env::var_os("TEST_LOG").is_none() {
        return false;
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        env.insert("RUST_LOG".into(), filter);
    }
    true
}

fn init_logging(config: &Config) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| pipedrive_whatsapp::telemetry::init(config.log_format, &config.log_filter));
}

/// URL of the PostgreSQL server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    // scripts/test names the databases of its run so that it drops exactly those afterwards.
    let prefix = std::env::var("PW_TEST_DB_PREFIX").unwrap_or_else(|_| "pwtest_".into());
    let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server_url())
        .await
        .expect("PostgreSQL for tests is reachable (DATABASE_URL)");
    admin
        .execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .await
        .expect("create test database");
    let mut url = url::Url::parse(&server_url()).expect("DATABASE_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// The environment of a test deployment (before `customize`).
pub fn test_env(
    database_url: &str,
    public_url: &str,
    pipedrive: &str,
    graph: &str,
) -> HashMap<String, String> {
    [
        ("DATABASE_URL", database_url),
        ("PUBLIC_URL", public_url),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("PIPEDRIVE_CLIENT_ID", CLIENT_ID),
        ("PIPEDRIVE_CLIENT_SECRET", CLIENT_SECRET),
        ("PIPEDRIVE_OAUTH_URL", pipedrive),
        ("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN),
        ("WHATSAPP_APP_SECRET", APP_SECRET),
        ("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN),
        ("WHATSAPP_PHONE_NUMBER_IDS", &PHONE_NUMBER_IDS.join(",")),
        ("WHATSAPP_BUSINESS_ACCOUNT_ID", WABA_ID),
        ("WHATSAPP_GRAPH_URL", graph),
        ("WHATSAPP_GRAPH_VERSION", "v25.0"),
        ("SECRET_KEY", SECRET_KEY),
        ("JITSI_URL", "https://meet.example.org"),
        ("LOG_FORMAT", "pretty"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Worker settings that make retries quick enough for tests.
pub fn fast_workers() -> WorkerConfig {
    WorkerConfig {
        concurrency: 8,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        retry: RetryPolicy {
            base: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
            max_attempts: 6,
        },
        shutdown_grace: Duration::from_secs(5),
        debounce: Duration::from_millis(200),
    }
}

/// Starts the app with the default test environment.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app after `customize` has edited its environment.
pub async fn spawn_app_with(customize: impl FnOnce(&mut HashMap<String, String>)) -> TestApp {
    spawn_app_on_database(&fresh_database().await, customize).await
}

/// Starts the app on an existing database (e.g. the one of an app that was stopped, to check what
/// survives a restart), after `customize` has edited its environment.
pub async fn spawn_app_on_database(
    database_url: &str,
    customize: impl FnOnce(&mut HashMap<String, String>),
) -> TestApp {
    let pipedrive = MockServer::start().await;
    let graph = MockServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut env = test_env(database_url, &address, &pipedrive.uri(), &graph.uri());
    let logging = logging(&mut env);
    customize(&mut env);
    let config = Config::load(&env).expect("test configuration is valid");
    if logging {
        init_logging(&config);
    }
    let application = Application::build_with_listener(config.clone(), listener, fast_workers())
        .await
        .expect("application starts");
    let shutdown = application.shutdown_token();
    let server = tokio::spawn(application.run_until_stopped());
    let db = PgPool::connect(database_url)
        .await
        .expect("connect to the test database");
    TestApp {
        address,
        db,
        pipedrive,
        graph,
        config,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        shutdown,
        server,
    }
}

impl TestApp {
    /// Absolute URL of `path` on the app.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the app")
    }

    /// Stops the app gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.server)
            .await
            .expect("app stops within 30 s");
        result.expect("server task").expect("server ran cleanly");
    }
}

/// How many messages, in either direction, are stored.
pub async fn message_count(db: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(db)
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the body is the contract's error envelope with `code`, and returns its message.
pub async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> String {
    let body = assert_error_body(response, status, code).await;
    body["data"]["message"].as_str().expect("message").to_string()
}

/// Like [`assert_error`], for errors that carry more than a message (a 429's `retry_by`): the
/// whole body.
pub async fn assert_error_body(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    assert!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json")),
        "error bodies are JSON"
    );
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["data"]["code"], code, "{body}");
    let message = body["data"]["message"].as_str().expect("message");
    assert!(!message.is_empty());
    body
}

impl TestApp {
    /// Posts a webhook body signed as Meta signs it.
    pub async fn post_webhook(&self, body: &serde_json::Value) -> reqwest::Response {
        let bytes = serde_json::to_vec(body).unwrap();
        let signature = pipedrive_whatsapp::whatsapp::signature::sign(APP_SECRET.as_bytes(), &bytes);
        self.client
            .post(self.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(bytes)
            .send()
            .await
            .expect("request reaches the app")
    }
}

/// A `messages` notification for one of our numbers carrying `messages` from `wa_id`.
pub fn inbound_webhook(
    phone_number_id: &str,
    wa_id: &str,
    name: &str,
    messages: Vec<serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": messages,
        }}]}]
    })
}

/// A status notification for one of our numbers.
pub fn status_webhook(phone_number_id: &str, statuses: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
            "statuses": statuses,
        }}]}]
    })
}

/// A text message item.
pub fn text_message(wamid: &str, wa_id: &str, timestamp: i64, body: &str) -> serde_json::Value {
    serde_json::json!({"from": wa_id, "id": wamid, "timestamp": timestamp.to_string(), "type": "text",
        "text": {"body": body}})
}

/// An app on a fresh database reached through a [`PgProxy`], for tests that cut the database;
/// the app, the proxy and the database's direct URL.
pub async fn spawn_app_behind_proxy() -> (TestApp, PgProxy, String) {
    let database = fresh_database().await;
    let proxy = PgProxy::start(&database).await;
    let proxy_url = proxy.url.clone();
    let app = spawn_app_with(|env| {
        env.insert("DATABASE_URL".into(), proxy_url);
    })
    .await;
    (app, proxy, database)
}

/// A TCP relay to PostgreSQL that a test can cut (connections dropped, new ones refused) and
/// restore, to simulate a database outage.
pub struct PgProxy {
    /// `postgres://…` URL of the database through the relay.
    pub url: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl PgProxy {
    /// Relays a local port to the server of `database_url`, for that database.
    pub async fn start(database_url: &str) -> Self {
        let upstream = url::Url::parse(database_url).unwrap();
        let target = format!(
            "{}:{}",
            upstream.host_str().unwrap(),
            upstream.port().unwrap_or(5432)
        );
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut url = upstream.clone();
        url.set_port(Some(port)).unwrap();
        let (up, mut watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let current = match listener.take() {
                    Some(l) => l,
                    None => match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                loop {
                    tokio::select! {
                        accepted = current.accept() => {
                            let Ok((mut inbound, _)) = accepted else { break };
                            let target = target.clone();
                            let mut down = watch.clone();
                            tokio::spawn(async move {
                                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                    _ = down.wait_for(|up| !*up) => {}
                                }
                            });
                        }
                        changed = watch.changed() => {
                            if changed.is_err() { return; }
                            if !*watch.borrow() { break; }
                        }
                    }
                }
                drop(current);
                if watch.wait_for(|up| *up).await.is_err() {
                    return;
                }
            }
        });
        Self {
            url: url.to_string(),
            up,
        }
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// The delivery mode (`inbox`, `timeline`, `disabled`) of the channel of a configured number.
pub async fn channel_mode(app: &TestApp, phone_number_id: &str) -> String {
    sqlx::query_scalar("SELECT mode FROM channels WHERE phone_number_id = $1")
        .bind(phone_number_id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The fake Graph API serves the media object `media_id` with `bytes` of `mime_type`.
pub async fn mount_graph_media(app: &TestApp, media_id: &str, mime_type: &str, bytes: &[u8]) {
    use sha2::Digest;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let cdn = format!("/cdn/{media_id}");
    Mock::given(method("GET"))
        .and(path(format!("/v25.0/{media_id}")))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": media_id, "mime_type": mime_type, "file_size": bytes.len(),
            "sha256": hex::encode(sha2::Sha256::digest(bytes)), "url": format!("{}{cdn}", app.graph.uri())})))
        .mount(&app.graph)
        .await;
    Mock::given(method("GET"))
        .and(path(cdn))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(bytes.to_vec()))
        .mount(&app.graph)
        .await;
}
