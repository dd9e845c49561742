//! Configuration: read once from the environment (and `.env`) into typed values at start-up.
//!
//! Every problem is reported as one line naming the variable and what it expects, so an operator
//! can fix a deployment without reading code. Secrets are wrapped so that neither `Debug` nor the
//! `check-config` listing can print them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::telemetry::LogFilter;

/// A configuration variable that is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {problem}; expected {expected}")]
pub struct ConfigError {
    /// Name of the environment variable.
    pub var: &'static str,
    /// What is wrong with it.
    pub problem: String,
    /// What a valid value looks like.
    pub expected: &'static str,
}

/// Where the values come from; tests pass a map instead of the process environment.
pub trait Source {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Source for std::collections::HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// The whole configuration of a running service.
#[derive(Clone, Debug)]
pub struct Config {
    /// PostgreSQL connection string.
    pub database_url: SecretString,
    /// Most connections the service's main pool opens (the queue's bookkeeping keeps a few more).
    pub database_max_connections: u32,
    /// HTTPS base URL at which Pipedrive, Meta and browsers reach this service.
    pub public_url: PublicUrl,
    /// Socket address the HTTP server binds.
    pub listen_addr: SocketAddr,
    /// Pipedrive app credentials and endpoints.
    pub pipedrive: PipedriveConfig,
    /// WhatsApp Cloud API credentials and numbers.
    pub whatsapp: WhatsAppConfig,
    /// Root secret for token encryption and signed links/states.
    pub secret_key: SecretKey,
    /// Jitsi Meet deployment used for video calls.
    pub jitsi: JitsiConfig,
    /// Where conversations go in Pipedrive and how the CRM timeline is written.
    pub timeline: TimelineConfig,
    /// Log output format.
    pub log_format: LogFormat,
    /// Which log events are written.
    pub log_filter: LogFilter,
    /// Job queue tuning.
    pub queue: QueueConfig,
    /// How long stored webhook bodies are kept.
    pub retention: RetentionConfig,
    /// Longest wait for an answer to a call to Pipedrive or the Graph API.
    pub outbound_timeout: Duration,
}

/// Tuning of the durable job queue of one process.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// Jobs run at the same time.
    pub concurrency: usize,
    /// How long a claimed job stays with its worker. A job whose process died runs again once
    /// its lease is over; a run longer than most of it is cut off and retried.
    pub lease: Duration,
    /// Delay after a job's first failure; it doubles with each further failure.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_max_delay: Duration,
    /// Failed attempts before a job is dead-lettered.
    pub max_attempts: i32,
    /// How long running jobs may finish at shutdown before they are released to other workers.
    pub shutdown_grace: Duration,
}

/// How long the webhook inbox keeps bodies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetentionConfig {
    /// A processed webhook is kept this long after it arrived.
    pub webhooks: Duration,
    /// A webhook parked for a number not served is kept this long after it arrived.
    pub parked_webhooks: Duration,
}

/// Pipedrive side of the configuration.
#[derive(Clone, Debug)]
pub struct PipedriveConfig {
    /// The app's OAuth client id (also the Basic-auth user of provider calls).
    pub client_id: String,
    /// The app's OAuth client secret (also the Basic-auth password of provider calls).
    pub client_secret: SecretString,
    /// Base URL of Pipedrive's OAuth server.
    pub oauth_url: Url,
    /// HS256 key of the tokens Pipedrive signs when it loads our custom UI (the chat panel and
    /// floating window); the client secret unless the extensions were given their own.
    pub ui_jwt_secret: SecretString,
}

/// WhatsApp side of the configuration.
#[derive(Clone, Debug)]
pub struct WhatsAppConfig {
    /// System-user access token for the Graph API.
    pub access_token: SecretString,
    /// Meta app secret: the HMAC key of webhook signatures.
    pub app_secret: SecretString,
    /// Token Meta echoes during the webhook verification handshake.
    pub verify_token: SecretString,
    /// Phone number ids served by this deployment; each one is a Pipedrive channel.
    pub phone_number_ids: Vec<String>,
    /// WhatsApp Business Account id (templates live there).
    pub business_account_id: String,
    /// Base URL of the Graph API.
    pub graph_url: Url,
    /// Graph API version path segment, e.g. `v25.0`.
    pub graph_version: String,
}

/// Jitsi Meet settings.
#[derive(Clone, Debug)]
pub struct JitsiConfig {
    /// Base URL of the Jitsi deployment; rooms are paths below it.
    pub url: Url,
    /// Credentials of a self-hosted Jitsi with JWT authentication, if it uses one.
    pub jwt: Option<JitsiJwtConfig>,
}

/// The application id and secret a self-hosted Jitsi (prosody `token` auth) accepts tokens from.
#[derive(Clone, Debug)]
pub struct JitsiJwtConfig {
    /// `JWT_APP_ID` of the Jitsi deployment: the `iss` of our tokens.
    pub app_id: String,
    /// `JWT_APP_SECRET` of the Jitsi deployment: the HS256 key of our tokens.
    pub app_secret: SecretString,
}

/// Where messages go in Pipedrive (`PIPEDRIVE_SINK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// The Messaging inbox while the Channels API answers, the CRM timeline once it answers
    /// 404/410 (per channel, switching by itself).
    Auto,
    /// Only the Messaging inbox, never switching.
    Inbox,
    /// Only the CRM timeline.
    Timeline,
    /// The Messaging inbox and the CRM timeline.
    Both,
}

impl Sink {
    /// The value as `PIPEDRIVE_SINK` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Auto => "auto",
            Sink::Inbox => "inbox",
            Sink::Timeline => "timeline",
            Sink::Both => "both",
        }
    }
}

/// The CRM timeline: sink selection, person creation and the API budget it may spend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Where messages go.
    pub sink: Sink,
    /// Create a Pipedrive person for a number no person has.
    pub create_persons: bool,
    /// API tokens per company per day the timeline assumes it may spend.
    pub daily_token_budget: u64,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

/// The public base URL, without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl(Url);

impl PublicUrl {
    /// Parses a base URL: https, or http for a loopback host (local development and tests).
    pub fn parse(value: &str) -> Result<Self, String> {
        let url = Url::parse(value.trim()).map_err(|e| format!("not a URL ({e})"))?;
        let local = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        match url.scheme() {
            "https" => {}
            "http" if local => {}
            other => return Err(format!("scheme {other}:// is not allowed")),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("it has a query or fragment".into());
        }
        if url.host_str().is_none() {
            return Err("it has no host".into());
        }
        Ok(Self(url))
    }

    /// The base URL joined with an absolute path such as `/media/x`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.as_str(), path)
    }

    /// The base URL as text, never ending in `/`.
    pub fn as_str(&self) -> &str {
        self.0.as_str().trim_end_matches('/')
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The 32-byte root secret.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Decodes 32 bytes of standard or URL-safe base64.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(value))
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value))
            .map_err(|_| "not valid base64".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("decodes to {} bytes, not 32", b.len()))?;
        Ok(Self(key))
    }

    /// The raw key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// Reads variables from a [`Source`], turning each problem into a [`ConfigError`].
pub struct Reader<'a> {
    source: &'a dyn Source,
}

impl<'a> Reader<'a> {
    /// A reader over `source`.
    pub fn new(source: &'a dyn Source) -> Self {
        Self { source }
    }

    /// The trimmed value, or `None` when unset or blank.
    pub fn optional(&self, var: &'static str) -> Option<String> {
        self.source
            .get(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value, or an error naming the variable.
    pub fn required(&self, var: &'static str, expected: &'static str) -> Result<String, ConfigError> {
        self.optional(var).ok_or_else(|| missing(var, expected))
    }

    /// The value parsed by `parse`, or `default` when unset.
    pub fn parsed<T>(
        &self,
        var: &'static str,
        default: Option<&str>,
        expected: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let raw = match (self.optional(var), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(missing(var, expected)),
        };
        parse(&raw).map_err(|problem| ConfigError {
            var,
            problem: format!("{problem} (got {})", shown(var, &raw)),
            expected,
        })
    }

    /// A secret value that must be present.
    pub fn secret(&self, var: &'static str, expected: &'static str) -> Result<SecretString, ConfigError> {
        self.required(var, expected).map(SecretString::from)
    }

    /// The public base URL.
    pub fn public_url(&self) -> Result<PublicUrl, ConfigError> {
        self.parsed(
            "PUBLIC_URL",
            None,
            "an https:// base URL such as https://whatsapp.example.com",
            PublicUrl::parse,
        )
    }

    /// The Pipedrive client id.
    pub fn pipedrive_client_id(&self) -> Result<String, ConfigError> {
        self.required(
            "PIPEDRIVE_CLIENT_ID",
            "the Client ID from Pipedrive's Developer Hub",
        )
    }
}

fn missing(var: &'static str, expected: &'static str) -> ConfigError {
    ConfigError {
        var,
        problem: "is not set".into(),
        expected,
    }
}

/// Values of secret variables are never echoed in errors.
fn shown(var: &str, raw: &str) -> String {
    if is_secret(var) {
        "a value that is not shown".into()
    } else {
        format!("{raw:?}")
    }
}

fn is_secret(var: &str) -> bool {
    matches!(
        var,
        "DATABASE_URL"
            | "PIPEDRIVE_CLIENT_SECRET"
            | "WHATSAPP_ACCESS_TOKEN"
            | "WHATSAPP_APP_SECRET"
            | "WHATSAPP_VERIFY_TOKEN"
            | "SECRET_KEY"
            | "JITSI_APP_SECRET"
            | "PIPEDRIVE_UI_JWT_SECRET"
    )
}

fn parse_http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {}:// is not allowed", url.scheme()));
    }
    Ok(url)
}

fn parse_digits_list(value: &str) -> Result<Vec<String>, String> {
    let ids: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return Err("the list is empty".into());
    }
    if let Some(bad) = ids.iter().find(|id| !id.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{bad:?} is not a numeric id"));
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != ids.len() {
        return Err("it lists an id twice".into());
    }
    Ok(ids)
}

fn parse_digits(value: &str) -> Result<String, String> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err("not a numeric id".into())
    }
}

fn parse_graph_version(value: &str) -> Result<String, String> {
    let ok = value
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        });
    if ok {
        Ok(value.to_string())
    } else {
        Err("not a version".into())
    }
}

fn parse_database_url(value: &str) -> Result<SecretString, String> {
    let url = Url::parse(value).map_err(|_| "not a URL".to_string())?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(format!("scheme {}:// is not PostgreSQL", url.scheme()));
    }
    Ok(SecretString::from(value.to_string()))
}

/// Both JWT variables or neither: one alone is a half-configured deployment whose meetings
/// nobody could join.
fn jitsi_jwt(r: &Reader<'_>) -> Result<Option<JitsiJwtConfig>, ConfigError> {
    const EXPECTED: &str =
        "JITSI_APP_ID and JITSI_APP_SECRET both set (self-hosted Jitsi with JWT auth) or both unset";
    let half = |var: &'static str, other: &str| ConfigError {
        var,
        problem: format!("is not set while {other} is"),
        expected: EXPECTED,
    };
    match (r.optional("JITSI_APP_ID"), r.optional("JITSI_APP_SECRET")) {
        (Some(app_id), Some(app_secret)) => Ok(Some(JitsiJwtConfig {
            app_id,
            app_secret: SecretString::from(app_secret),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(half("JITSI_APP_SECRET", "JITSI_APP_ID")),
        (None, Some(_)) => Err(half("JITSI_APP_ID", "JITSI_APP_SECRET")),
    }
}

fn parse_sink(value: &str) -> Result<Sink, String> {
    match value.to_ascii_lowercase().as_str() {
        "auto" => Ok(Sink::Auto),
        "inbox" => Ok(Sink::Inbox),
        "timeline" => Ok(Sink::Timeline),
        "both" => Ok(Sink::Both),
        _ => Err("unknown sink".into()),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("not a boolean".into()),
    }
}

fn parse_token_budget(value: &str) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(0) => Err("a budget of zero would never write".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("not a whole number".into()),
    }
}

/// Decimal seconds within `min..=max`, e.g. `0.5` or `120`.
fn seconds(min: f64, max: f64) -> impl Fn(&str) -> Result<Duration, String> {
    move |value| {
        let seconds: f64 = value.parse().map_err(|_| "not a number of seconds".to_string())?;
        if !(min..=max).contains(&seconds) {
            return Err(format!("out of range {min}..={max}"));
        }
        Ok(Duration::from_secs_f64(seconds))
    }
}

/// A whole number within `min..=max`.
fn whole<T: TryFrom<u64>>(min: u64, max: u64) -> impl Fn(&str) -> Result<T, String> {
    move |value| {
        let n: u64 = value.parse().map_err(|_| "not a whole number".to_string())?;
        if !(min..=max).contains(&n) {
            return Err(format!("out of range {min}..={max}"));
        }
        T::try_from(n).map_err(|_| format!("out of range {min}..={max}"))
    }
}

fn queue_config(r: &Reader<'_>) -> Result<QueueConfig, ConfigError> {
    let retry_base = r.parsed(
        "QUEUE_RETRY_BASE_SECONDS",
        Some("1"),
        "seconds (0.01 to 3600) before the first retry of a failed job",
        seconds(0.01, 3600.0),
    )?;
    let retry_max_delay = r.parsed(
        "QUEUE_RETRY_MAX_SECONDS",
        Some("3600"),
        "seconds (0.01 to 86400) between two attempts at most, not less than QUEUE_RETRY_BASE_SECONDS",
        seconds(0.01, 86_400.0),
    )?;
    if retry_max_delay < retry_base {
        return Err(ConfigError {
            var: "QUEUE_RETRY_MAX_SECONDS",
            problem: "is shorter than QUEUE_RETRY_BASE_SECONDS".into(),
            expected: "a longest delay at least as long as the first one",
        });
    }
    Ok(QueueConfig {
        concurrency: r.parsed(
            "QUEUE_CONCURRENCY",
            Some("32"),
            "a whole number of jobs (1 to 1024) run at the same time",
            whole(1, 1024),
        )?,
        lease: r.parsed(
            "QUEUE_LEASE_SECONDS",
            Some("120"),
            "seconds (1 to 86400) a claimed job stays with its worker",
            seconds(1.0, 86_400.0),
        )?,
        retry_base,
        retry_max_delay,
        max_attempts: r.parsed(
            "QUEUE_MAX_ATTEMPTS",
            Some("25"),
            "a whole number of attempts (1 to 1000) before a job is dead-lettered",
            whole(1, 1000),
        )?,
        shutdown_grace: r.parsed(
            "SHUTDOWN_GRACE_SECONDS",
            Some("10"),
            "seconds (0 to 600) running jobs may finish at shutdown",
            seconds(0.0, 600.0),
        )?,
    })
}

fn retention_config(r: &Reader<'_>) -> Result<RetentionConfig, ConfigError> {
    let webhooks: u64 = r.parsed(
        "WEBHOOK_RETENTION_DAYS",
        Some("7"),
        "a whole number of days (1 to 3650) a processed webhook's body is kept",
        whole(1, 3650),
    )?;
    let parked_webhooks: u64 = r.parsed(
        "PARKED_WEBHOOK_RETENTION_DAYS",
        Some("30"),
        "a whole number of days (1 to 3650) a webhook parked for a number not served is kept, not less than WEBHOOK_RETENTION_DAYS",
        whole(1, 3650),
    )?;
    // The purge stops at the first webhook too recent to go as a processed one, so it never
    // reaches parked ones younger than that.
    if parked_webhooks < webhooks {
        return Err(ConfigError {
            var: "PARKED_WEBHOOK_RETENTION_DAYS",
            problem: "is shorter than WEBHOOK_RETENTION_DAYS".into(),
            expected: "parked webhooks kept at least as long as processed ones",
        });
    }
    let days = |n: u64| Duration::from_secs(n * 86_400);
    Ok(RetentionConfig {
        webhooks: days(webhooks),
        parked_webhooks: days(parked_webhooks),
    })
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err("unknown format".into()),
    }
}

impl Config {
    /// Reads and validates the whole configuration.
    pub fn load(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source);
        let default_log_format = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            "pretty"
        } else {
            "json"
        };
        Ok(Self {
            database_url: r.parsed(
                "DATABASE_URL",
                None,
                "a PostgreSQL URL such as postgres://user:password@host:5432/db",
                parse_database_url,
            )?,
            // The webhook writers and the ingest loop hold five of them under load. More than
            // a few per core only makes PostgreSQL's processes queue for the CPU instead of for
            // a connection, which lengthens the tail of every read (BENCHMARKS.md).
            database_max_connections: r.parsed(
                "DATABASE_MAX_CONNECTIONS",
                Some("8"),
                "a whole number of connections (8 to 1000)",
                whole(8, 1000),
            )?,
            public_url: r.public_url()?,
            listen_addr: r.parsed(
                "LISTEN_ADDR",
                Some("0.0.0.0:8080"),
                "a socket address such as 0.0.0.0:8080",
                |v| v.parse::<SocketAddr>().map_err(|e| e.to_string()),
            )?,
            pipedrive: {
                let client_id = r.pipedrive_client_id()?;
                let client_secret = r.secret(
                    "PIPEDRIVE_CLIENT_SECRET",
                    "the Client secret from Pipedrive's Developer Hub",
                )?;
                PipedriveConfig {
                    ui_jwt_secret: r
                        .optional("PIPEDRIVE_UI_JWT_SECRET")
                        .map(SecretString::from)
                        .unwrap_or_else(|| client_secret.clone()),
                    client_id,
                    client_secret,
                    oauth_url: r.parsed(
                        "PIPEDRIVE_OAUTH_URL",
                        Some("https://oauth.pipedrive.com"),
                        "the base URL of Pipedrive's OAuth server",
                        parse_http_url,
                    )?,
                }
            },
            whatsapp: WhatsAppConfig {
                access_token: r.secret(
                    "WHATSAPP_ACCESS_TOKEN",
                    "a system-user access token with whatsapp_business_messaging",
                )?,
                app_secret: r.secret(
                    "WHATSAPP_APP_SECRET",
                    "the Meta app secret (App settings → Basic)",
                )?,
                verify_token: r.secret(
                    "WHATSAPP_VERIFY_TOKEN",
                    "the verify token typed into Meta's webhook settings",
                )?,
                phone_number_ids: r.parsed(
                    "WHATSAPP_PHONE_NUMBER_IDS",
                    None,
                    "comma-separated numeric phone number ids",
                    parse_digits_list,
                )?,
                business_account_id: r.parsed(
                    "WHATSAPP_BUSINESS_ACCOUNT_ID",
                    None,
                    "the numeric WhatsApp Business Account id",
                    parse_digits,
                )?,
                graph_url: r.parsed(
                    "WHATSAPP_GRAPH_URL",
                    Some("https://graph.facebook.com"),
                    "the base URL of the Graph API",
                    parse_http_url,
                )?,
                graph_version: r.parsed(
                    "WHATSAPP_GRAPH_VERSION",
                    Some("v25.0"),
                    "a Graph API version such as v25.0",
                    parse_graph_version,
                )?,
            },
            secret_key: r.parsed(
                "SECRET_KEY",
                None,
                "32 random bytes in base64 (openssl rand -base64 32)",
                SecretKey::parse,
            )?,
            jitsi: JitsiConfig {
                url: r.parsed(
                    "JITSI_URL",
                    Some("https://meet.jit.si"),
                    "the base URL of a Jitsi Meet deployment",
                    parse_http_url,
                )?,
                jwt: jitsi_jwt(&r)?,
            },
            timeline: TimelineConfig {
                sink: r.parsed(
                    "PIPEDRIVE_SINK",
                    Some("auto"),
                    "auto, inbox, timeline or both",
                    parse_sink,
                )?,
                create_persons: r.parsed("CREATE_PERSONS", Some("true"), "true or false", parse_bool)?,
                daily_token_budget: r.parsed(
                    "PIPEDRIVE_DAILY_TOKEN_BUDGET",
                    Some("30000"),
                    "the company's daily API token budget, e.g. 30000 × plan multiplier × seats",
                    parse_token_budget,
                )?,
            },
            log_format: r.parsed(
                "LOG_FORMAT",
                Some(default_log_format),
                "json or pretty",
                parse_log_format,
            )?,
            log_filter: r.parsed(
                "RUST_LOG",
                Some("info"),
                "a level, then `target=level` directives, comma-separated, e.g. info,sqlx=warn",
                str::parse,
            )?,
            queue: queue_config(&r)?,
            retention: retention_config(&r)?,
            outbound_timeout: r.parsed(
                "OUTBOUND_TIMEOUT_SECONDS",
                Some("30"),
                "seconds (1 to 600) to wait for Pipedrive or the Graph API to answer",
                seconds(1.0, 600.0),
            )?,
        })
    }

    /// The configuration as `NAME=value` lines with every secret redacted.
    pub fn redacted_listing(&self) -> String {
        const HIDDEN: &str = "[REDACTED]";
        let mut db = Url::parse(self.database_url.expose_secret()).ok();
        if let Some(url) = db.as_mut()
            && url.password().is_some()
        {
            let _ = url.set_password(Some(HIDDEN));
        }
        let lines = [
            (
                "DATABASE_URL",
                db.map(|u| u.to_string()).unwrap_or_else(|| HIDDEN.into()),
            ),
            (
                "DATABASE_MAX_CONNECTIONS",
                self.database_max_connections.to_string(),
            ),
            ("PUBLIC_URL", self.public_url.to_string()),
            ("LISTEN_ADDR", self.listen_addr.to_string()),
            ("PIPEDRIVE_CLIENT_ID", self.pipedrive.client_id.clone()),
            ("PIPEDRIVE_CLIENT_SECRET", HIDDEN.into()),
            ("PIPEDRIVE_OAUTH_URL", self.pipedrive.oauth_url.to_string()),
            ("PIPEDRIVE_UI_JWT_SECRET", HIDDEN.into()),
            ("WHATSAPP_ACCESS_TOKEN", HIDDEN.into()),
            ("WHATSAPP_APP_SECRET", HIDDEN.into()),
            ("WHATSAPP_VERIFY_TOKEN", HIDDEN.into()),
            (
                "WHATSAPP_PHONE_NUMBER_IDS",
                self.whatsapp.phone_number_ids.join(","),
            ),
            (
                "WHATSAPP_BUSINESS_ACCOUNT_ID",
                self.whatsapp.business_account_id.clone(),
            ),
            ("WHATSAPP_GRAPH_URL", self.whatsapp.graph_url.to_string()),
            ("WHATSAPP_GRAPH_VERSION", self.whatsapp.graph_version.clone()),
            ("SECRET_KEY", HIDDEN.into()),
            ("JITSI_URL", self.jitsi.url.to_string()),
            (
                "JITSI_APP_ID",
                self.jitsi
                    .jwt
                    .as_ref()
                    .map(|j| j.app_id.clone())
                    .unwrap_or_default(),
            ),
            (
                "JITSI_APP_SECRET",
                self.jitsi.jwt.as_ref().map(|_| HIDDEN.into()).unwrap_or_default(),
            ),
            ("PIPEDRIVE_SINK", self.timeline.sink.as_str().into()),
            ("CREATE_PERSONS", self.timeline.create_persons.to_string()),
            (
                "PIPEDRIVE_DAILY_TOKEN_BUDGET",
                self.timeline.daily_token_budget.to_string(),
            ),
            (
                "LOG_FORMAT",
                match self.log_format {
                    LogFormat::Json => "json".into(),
                    LogFormat::Pretty => "pretty".into(),
                },
            ),
            ("RUST_LOG", self.log_filter.to_string()),
            ("QUEUE_CONCURRENCY", self.queue.concurrency.to_string()),
            ("QUEUE_LEASE_SECONDS", self.queue.lease.as_secs_f64().to_string()),
            (
                "QUEUE_RETRY_BASE_SECONDS",
                self.queue.retry_base.as_secs_f64().to_string(),
            ),
            (
                "QUEUE_RETRY_MAX_SECONDS",
                self.queue.retry_max_delay.as_secs_f64().to_string(),
            ),
            ("QUEUE_MAX_ATTEMPTS", self.queue.max_attempts.to_string()),
            (
                "SHUTDOWN_GRACE_SECONDS",
                self.queue.shutdown_grace.as_secs_f64().to_string(),
            ),
            (
                "OUTBOUND_TIMEOUT_SECONDS",
                self.outbound_timeout.as_secs_f64().to_string(),
            ),
            (
                "WEBHOOK_RETENTION_DAYS",
                (self.retention.webhooks.as_secs() / 86_400).to_string(),
            ),
            (
                "PARKED_WEBHOOK_RETENTION_DAYS",
                (self.retention.parked_webhooks.as_secs() / 86_400).to_string(),
            ),
        ];
        lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn valid() -> HashMap<String, String> {
        [
            ("DATABASE_URL", "postgres://app:pw@localhost:5432/app"),
            ("PUBLIC_URL", "https://wa.example.com/"),
            ("PIPEDRIVE_CLIENT_ID", "abc123"),
            ("PIPEDRIVE_CLIENT_SECRET", "client-secret-value"),
            ("WHATSAPP_ACCESS_TOKEN", "EAAG-token-value"),
            ("WHATSAPP_APP_SECRET", "app-secret-value"),
            ("WHATSAPP_VERIFY_TOKEN", "verify-token-value"),
            ("WHATSAPP_PHONE_NUMBER_IDS", "1098765, 1098766"),
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", "2310055"),
            ("SECRET_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn valid_environment_loads_with_defaults() {
        let config = Config::load(&valid()).expect("valid config");
        assert_eq!(config.public_url.as_str(), "https://wa.example.com");
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.whatsapp.phone_number_ids, ["1098765", "1098766"]);
        assert_eq!(config.whatsapp.graph_version, "v25.0");
        assert_eq!(
            config.pipedrive.oauth_url.as_str(),
            "https://oauth.pipedrive.com/"
        );
        assert_eq!(config.jitsi.url.as_str(), "https://meet.jit.si/");
        assert!(config.jitsi.jwt.is_none());
        assert_eq!(
            config.timeline,
            TimelineConfig {
                sink: Sink::Auto,
                create_persons: true,
                daily_token_budget: 30_000,
            }
        );
        assert_eq!(
            config.queue,
            QueueConfig {
                concurrency: 32,
                lease: Duration::from_secs(120),
                retry_base: Duration::from_secs(1),
                retry_max_delay: Duration::from_secs(3600),
                max_attempts: 25,
                shutdown_grace: Duration::from_secs(10),
            }
        );
        assert_eq!(config.outbound_timeout, Duration::from_secs(30));
        assert_eq!(
            config.retention,
            RetentionConfig {
                webhooks: Duration::from_secs(7 * 86_400),
                parked_webhooks: Duration::from_secs(30 * 86_400),
            }
        );
        assert_eq!(config.database_max_connections, 8);
        assert!(config.redacted_listing().contains("RUST_LOG=info\n"));
    }

    #[test]
    fn queue_tuning_takes_decimal_seconds_within_bounds() {
        let mut env = valid();
        for (var, value) in [
            ("QUEUE_CONCURRENCY", "4"),
            ("QUEUE_LEASE_SECONDS", "2.5"),
            ("QUEUE_RETRY_BASE_SECONDS", "0.05"),
            ("QUEUE_RETRY_MAX_SECONDS", "0.5"),
            ("QUEUE_MAX_ATTEMPTS", "40"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
            ("OUTBOUND_TIMEOUT_SECONDS", "1.5"),
        ] {
            env.insert(var.into(), value.into());
        }
        let config = Config::load(&env).expect("valid tuning");
        assert_eq!(config.queue.concurrency, 4);
        assert_eq!(config.queue.lease, Duration::from_millis(2500));
        assert_eq!(config.queue.retry_base, Duration::from_millis(50));
        assert_eq!(config.queue.retry_max_delay, Duration::from_millis(500));
        assert_eq!(config.queue.max_attempts, 40);
        assert_eq!(config.queue.shutdown_grace, Duration::ZERO);
        assert_eq!(config.outbound_timeout, Duration::from_millis(1500));
        assert!(config.redacted_listing().contains("QUEUE_LEASE_SECONDS=2.5\n"));
    }

    #[test]
    fn retention_is_read_in_days_and_listed() {
        let mut env = valid();
        env.insert("WEBHOOK_RETENTION_DAYS".into(), "2".into());
        env.insert("PARKED_WEBHOOK_RETENTION_DAYS".into(), "2".into());
        let config = Config::load(&env).expect("valid retention");
        assert_eq!(config.retention.webhooks, Duration::from_secs(2 * 86_400));
        assert_eq!(config.retention.parked_webhooks, Duration::from_secs(2 * 86_400));
        let listing = config.redacted_listing();
        assert!(listing.contains("\nWEBHOOK_RETENTION_DAYS=2\n"), "{listing}");
        assert!(listing.contains("PARKED_WEBHOOK_RETENTION_DAYS=2\n"), "{listing}");
    }

    #[test]
    fn timeline_settings_are_read_and_listed() {
        let mut env = valid();
        env.insert("PIPEDRIVE_SINK".into(), "Both".into());
        env.insert("CREATE_PERSONS".into(), "false".into());
        env.insert("PIPEDRIVE_DAILY_TOKEN_BUDGET".into(), "300000".into());
        let config = Config::load(&env).expect("valid");
        assert_eq!(config.timeline.sink, Sink::Both);
        assert!(!config.timeline.create_persons);
        assert_eq!(config.timeline.daily_token_budget, 300_000);
        let listing = config.redacted_listing();
        for line in [
            "PIPEDRIVE_SINK=both\n",
            "CREATE_PERSONS=false\n",
            "PIPEDRIVE_DAILY_TOKEN_BUDGET=300000\n",
        ] {
            assert!(listing.contains(line), "{listing}");
        }
        for sink in ["auto", "inbox", "timeline", "both"] {
            env.insert("PIPEDRIVE_SINK".into(), sink.into());
            assert_eq!(Config::load(&env).unwrap().timeline.sink.as_str(), sink);
        }
    }

    #[test]
    fn jitsi_jwt_credentials_come_as_a_pair() {
        let mut env = valid();
        env.insert("JITSI_APP_ID".into(), "meetings".into());
        env.insert("JITSI_APP_SECRET".into(), "jitsi-secret-value".into());
        let config = Config::load(&env).expect("both set");
        let jwt = config.jitsi.jwt.as_ref().expect("JWT mode");
        assert_eq!(jwt.app_id, "meetings");
        assert_eq!(jwt.app_secret.expose_secret(), "jitsi-secret-value");
        let listing = config.redacted_listing();
        assert!(listing.contains("JITSI_APP_ID=meetings\n"), "{listing}");
        assert!(!listing.contains("jitsi-secret-value"), "{listing}");
        assert!(!format!("{config:?}").contains("jitsi-secret-value"));

        for (set, missing) in [
            ("JITSI_APP_ID", "JITSI_APP_SECRET"),
            ("JITSI_APP_SECRET", "JITSI_APP_ID"),
        ] {
            let mut env = valid();
            env.insert(set.into(), "value".into());
            env.insert(missing.into(), "  ".into());
            let err = Config::load(&env).expect_err(set);
            assert_eq!(err.var, missing);
            assert!(err.to_string().contains(set), "{err}");
        }
    }

    #[test]
    fn each_required_variable_is_named_when_missing() {
        for var in [
            "DATABASE_URL",
            "PUBLIC_URL",
            "PIPEDRIVE_CLIENT_ID",
            "PIPEDRIVE_CLIENT_SECRET",
            "WHATSAPP_ACCESS_TOKEN",
            "WHATSAPP_APP_SECRET",
            "WHATSAPP_VERIFY_TOKEN",
            "WHATSAPP_PHONE_NUMBER_IDS",
            "WHATSAPP_BUSINESS_ACCOUNT_ID",
            "SECRET_KEY",
        ] {
            let mut env = valid();
            env.remove(var);
            let err = Config::load(&env).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_rejected_with_the_variable_name() {
        let cases = [
            ("PUBLIC_URL", "http://wa.example.com"),
            ("PUBLIC_URL", "not a url"),
            ("LISTEN_ADDR", "8080"),
            ("WHATSAPP_PHONE_NUMBER_IDS", "123,abc"),
            ("WHATSAPP_PHONE_NUMBER_IDS", "123,123"),
            ("WHATSAPP_BUSINESS_ACCOUNT_ID", "waba-1"),
            ("WHATSAPP_GRAPH_VERSION", "25"),
            ("SECRET_KEY", "c2hvcnQ="),
            ("LOG_FORMAT", "xml"),
            ("RUST_LOG", "info,sqlx=loud"),
            ("DATABASE_URL", "mysql://x@y/z"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("DATABASE_MAX_CONNECTIONS", "many"),
            ("PIPEDRIVE_OAUTH_URL", "ftp://oauth.example.com"),
            ("PIPEDRIVE_SINK", "channels"),
            ("CREATE_PERSONS", "maybe"),
            ("PIPEDRIVE_DAILY_TOKEN_BUDGET", "0"),
            ("PIPEDRIVE_DAILY_TOKEN_BUDGET", "lots"),
            ("QUEUE_CONCURRENCY", "0"),
            ("QUEUE_CONCURRENCY", "99999999999999999999999"),
            ("QUEUE_LEASE_SECONDS", "0.5"),
            ("QUEUE_LEASE_SECONDS", "NaN"),
            ("QUEUE_RETRY_BASE_SECONDS", "-1"),
            ("QUEUE_RETRY_MAX_SECONDS", "0.1"),
            ("QUEUE_MAX_ATTEMPTS", "1.5"),
            ("SHUTDOWN_GRACE_SECONDS", "inf"),
            ("OUTBOUND_TIMEOUT_SECONDS", "1e9"),
            ("WEBHOOK_RETENTION_DAYS", "0"),
            ("WEBHOOK_RETENTION_DAYS", "1.5"),
            ("PARKED_WEBHOOK_RETENTION_DAYS", "5"),
            ("PARKED_WEBHOOK_RETENTION_DAYS", "9999"),
        ];
        for (var, value) in cases {
            let mut env = valid();
            env.insert(var.into(), value.into());
            let err = Config::load(&env).expect_err(value);
            assert_eq!(err.var, var, "{value}");
        }
    }

    #[test]
    fn secrets_never_appear_in_errors_debug_or_listing() {
        let mut env = valid();
        env.insert("SECRET_KEY".into(), "bm90LTMyLWJ5dGVzLXNlY3JldA==".into());
        let err = Config::load(&env).unwrap_err().to_string();
        assert!(!err.contains("bm90LTMy"), "{err}");

        let config = Config::load(&valid()).unwrap();
        let printed = format!("{config:?}\n{}", config.redacted_listing());
        for secret in [
            "client-secret-value",
            "EAAG-token-value",
            "app-secret-value",
            "verify-token-value",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ":pw@",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked");
        }
        assert!(printed.contains("PIPEDRIVE_CLIENT_ID=abc123"));
    }

    #[test]
    fn the_ui_jwt_secret_defaults_to_the_client_secret() {
        let config = Config::load(&valid()).unwrap();
        assert_eq!(
            config.pipedrive.ui_jwt_secret.expose_secret(),
            "client-secret-value"
        );
        let mut env = valid();
        env.insert(
            "PIPEDRIVE_UI_JWT_SECRET".into(),
            " extension-secret-value ".into(),
        );
        let config = Config::load(&env).unwrap();
        assert_eq!(
            config.pipedrive.ui_jwt_secret.expose_secret(),
            "extension-secret-value"
        );
        let printed = format!("{config:?}\n{}", config.redacted_listing());
        assert!(!printed.contains("extension-secret-value"), "{printed}");
        assert!(printed.contains("PIPEDRIVE_UI_JWT_SECRET=[REDACTED]\n"));
    }

    #[test]
    fn http_public_url_is_allowed_on_loopback_only() {
        assert!(PublicUrl::parse("http://127.0.0.1:8080").is_ok());
        assert!(PublicUrl::parse("http://localhost").is_ok());
        assert!(PublicUrl::parse("http://example.com").is_err());
        assert_eq!(
            PublicUrl::parse("https://x.example.com/base/")
                .unwrap()
                .join("/media/1"),
            "https://x.example.com/base/media/1"
        );
    }
}
