//! What every request handler and job handler shares.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto::Keys;
use crate::http::basic_auth::PipedriveCredentials;
use crate::http::read_limit::{READS_PER_CONNECTION, ReadLimit};
use crate::pipedrive::PipedriveClient;
use crate::pipedrive::oauth::PipedriveOAuth;
use crate::video::jitsi::Jitsi;
use crate::whatsapp::graph::GraphClient;
use crate::whatsapp::intake::WebhookInbox;

/// Shared state; cheap to clone: one reference count. Axum clones it for every middleware and
/// handler of every request, and cloning each of its parts took a dozen counts shared by every
/// core, 2 % of the machine under reads (BENCHMARKS.md, fifteenth round).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What the handlers and job handlers share.
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// PostgreSQL pool.
    pub db: PgPool,
    /// HTTP client for every outbound call (Pipedrive, Graph API).
    pub http: reqwest::Client,
    /// Keys derived from `SECRET_KEY`.
    pub keys: Arc<Keys>,
    /// Expected Basic credentials of calls from Pipedrive.
    pub pipedrive_credentials: PipedriveCredentials,
    /// Prometheus registry.
    pub metrics: PrometheusHandle,
    /// Meta's Graph API.
    pub graph: GraphClient,
    /// Backoff and budget of failed jobs (also used when a request runs a job at once).
    pub retry: crate::queue::RetryPolicy,
    /// Where webhook handlers store bodies, committed in groups.
    pub inbox: WebhookInbox,
    /// Wakes the webhook ingest loop after a webhook was committed.
    pub ingest_wake: Arc<Notify>,
    /// Join links (and tokens) for the Jitsi deployment of video calls.
    pub jitsi: Arc<Jitsi>,
    /// Pipedrive's API, acting as an installation (tokens refreshed on demand).
    pub pipedrive: PipedriveClient,
    /// Room left for Pipedrive's reads in flight.
    pub read_limit: ReadLimit,
}

impl AppState {
    /// Builds the state for `config` around an existing pool, with `retry` for failed jobs, and
    /// starts the webhook inbox's writers (so it must be called within a Tokio runtime).
    pub fn new(config: Config, db: PgPool, retry: crate::queue::RetryPolicy) -> Self {
        let keys = Arc::new(Keys::new(&config.secret_key));
        let pipedrive_credentials = PipedriveCredentials::new(&config.pipedrive);
        let http = outbound_client(config.outbound_timeout);
        let oauth = PipedriveOAuth::new(&config.pipedrive, &config.public_url, http.clone());
        Self(Arc::new(Shared {
            graph: GraphClient::new(&config.whatsapp, http.clone()),
            jitsi: Arc::new(Jitsi::new(&config.jitsi)),
            pipedrive: PipedriveClient::new(db.clone(), http.clone(), keys.clone(), oauth),
            read_limit: ReadLimit::new(config.database_max_connections as usize * READS_PER_CONNECTION),
            inbox: WebhookInbox::new(db.clone()),
            config: Arc::new(config),
            db,
            http,
            ingest_wake: Arc::new(Notify::new()),
            retry,
            keys,
            pipedrive_credentials,
            metrics: crate::metrics::handle(),
        }))
    }
}

/// The shared outbound client: rustls, answers awaited at most `timeout`, and no redirects
/// (OAuth token and Graph calls must never be redirected elsewhere with our credentials).
pub fn outbound_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("pipedrive-whatsapp/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the TLS backend initialises")
}
