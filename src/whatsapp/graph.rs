//! Client of Meta's Graph API (WhatsApp Cloud API): one place that attaches the access token,
//! builds versioned URLs and turns Graph's error bodies into a classified [`GraphError`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::WhatsAppConfig;
use crate::queue::JobError;

/// Tag that jobs failing on an invalid WhatsApp token park on; start-up un-parks it, since a
/// new token needs a restart with new configuration.
pub const TOKEN_PARK_TAG: &str = "whatsapp:token";

/// A failed Graph API call.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Graph answered with its error object.
    #[error("Graph API error {code} (HTTP {status}): {message}{}", details.as_deref().map(|d| format!(" — {d}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Graph's error code (`error.code`), the key of all handling.
        code: i64,
        /// Graph's message, e.g. `(#131009) Parameter value is not valid`.
        message: String,
        /// `error.error_data.details`, meant for humans.
        details: Option<String>,
        /// For Meta support.
        fbtrace_id: Option<String>,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// A non-success status without Graph's error object (CDN, proxy).
    #[error("HTTP {status} from the Graph API")]
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// The request never reached Meta (DNS, connect, TLS): safe to send again.
    #[error("Graph API unreachable: {0}")]
    Unreachable(String),
    /// The request may have reached Meta but no answer came (timeout, reset mid-way).
    #[error("no answer from the Graph API: {0}")]
    NoAnswer(String),
    /// The answer was not the JSON we expected.
    #[error("unexpected Graph API answer: {0}")]
    Decode(String),
}

/// What a caller should do about a [`GraphError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again with backoff.
    Transient,
    /// Slow down; try again later.
    RateLimited,
    /// The access token is invalid or lacks permissions: nothing works until an operator acts.
    Auth,
    /// The request itself is wrong; retrying unchanged cannot help.
    Permanent,
}

/// Graph error codes that mean "too fast" (app, WABA, number throughput, pair rate, spam rate,
/// registration rate).
const RATE_LIMIT_CODES: &[i64] = &[4, 80007, 130429, 131048, 131056, 133016];
/// Codes Meta documents as temporary.
const TRANSIENT_CODES: &[i64] = &[1, 2, 131000, 131016, 131057, 133004];
/// Token invalid, expired or missing permissions.
const AUTH_CODES: &[i64] = &[0, 190, 10, 131005];

impl GraphError {
    /// How to handle the error.
    pub fn class(&self) -> ErrorClass {
        match self {
            GraphError::Api { status, code, .. } => {
                if RATE_LIMIT_CODES.contains(code) || *status == 429 {
                    ErrorClass::RateLimited
                } else if AUTH_CODES.contains(code) || (200..300).contains(code) || *status == 401 {
                    ErrorClass::Auth
                } else if TRANSIENT_CODES.contains(code) || *status >= 500 {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Permanent
                }
            }
            GraphError::Status { status, .. } => match *status {
                429 => ErrorClass::RateLimited,
                401 | 403 => ErrorClass::Auth,
                s if s >= 500 || s == 408 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            GraphError::Unreachable(_) | GraphError::NoAnswer(_) => ErrorClass::Transient,
            GraphError::Decode(_) => ErrorClass::Transient,
        }
    }

    /// Graph's error code, if Graph sent one.
    pub fn code(&self) -> Option<i64> {
        match self {
            GraphError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Api { retry_after, .. } | GraphError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl From<GraphError> for JobError {
    fn from(error: GraphError) -> Self {
        match error.class() {
            ErrorClass::Transient => JobError::Retry {
                after: error.retry_after(),
                error: error.to_string(),
            },
            ErrorClass::RateLimited => JobError::Retry {
                // Throughput limits clear within seconds to minutes; never hammer.
                after: Some(error.retry_after().unwrap_or(Duration::from_secs(10))),
                error: error.to_string(),
            },
            ErrorClass::Auth => JobError::Park {
                on: TOKEN_PARK_TAG.into(),
                reason: format!("{error}; fix WHATSAPP_ACCESS_TOKEN and restart"),
            },
            ErrorClass::Permanent => JobError::Permanent(error.to_string()),
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
    error_data: Option<ErrorData>,
    fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorData {
    details: Option<String>,
}

/// A business phone number as the Graph API describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct PhoneNumber {
    /// The phone number id.
    pub id: String,
    /// The number as people dial it, e.g. `+1 555-000-1111`.
    pub display_phone_number: Option<String>,
    /// The business name WhatsApp verified.
    pub verified_name: Option<String>,
}

/// The Graph API, authenticated with the system-user token.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for the configured Graph URL and version.
    pub fn new(config: &WhatsAppConfig, http: reqwest::Client) -> Self {
        Self {
            http,
            base: format!(
                "{}/{}",
                config.graph_url.as_str().trim_end_matches('/'),
                config.graph_version
            ),
            token: config.access_token.clone(),
        }
    }

    /// The versioned URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request to an absolute URL with the Bearer token attached (also used for media
    /// downloads, which need the same token).
    pub fn authorized(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(self.token.expose_secret())
    }

    /// Sends `request` and decodes a JSON answer, classifying every failure.
    pub async fn send_json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, GraphError> {
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GraphError::NoAnswer(e.without_url().to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode(e.to_string()));
        }
        Err(error_from(status, &bytes, retry_after))
    }

    /// `GET {base}{path}?query` as JSON.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GraphError> {
        self.send_json(self.authorized(Method::GET, &self.url(path)).query(query))
            .await
    }

    /// `POST {base}{path}` with a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, GraphError> {
        self.send_json(self.authorized(Method::POST, &self.url(path)).json(body))
            .await
    }

    /// The display number and verified name of a business phone number.
    #[tracing::instrument(skip(self))]
    pub async fn phone_number(&self, phone_number_id: &str) -> Result<PhoneNumber, GraphError> {
        self.get(
            &format!("/{phone_number_id}"),
            &[("fields", "id,display_phone_number,verified_name")],
        )
        .await
    }
}

/// Splits transport failures into "never sent" and "maybe sent": the Messages API has no
/// idempotency key, so only the former may be blindly retried by a send.
fn transport_error(error: reqwest::Error) -> GraphError {
    let error = error.without_url();
    if error.is_connect() || error.is_builder() || error.is_request() && !error.is_timeout() {
        GraphError::Unreachable(error.to_string())
    } else {
        GraphError::NoAnswer(error.to_string())
    }
}

fn error_from(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> GraphError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(ErrorEnvelope { error }) => GraphError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            details: error.error_data.and_then(|d| d.details),
            fbtrace_id: error.fbtrace_id,
            retry_after,
        },
        Err(_) => GraphError::Status {
            status: status.as_u16(),
            retry_after,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Meta).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: i64) -> GraphError {
        GraphError::Api {
            status,
            code,
            message: String::new(),
            details: None,
            fbtrace_id: None,
            retry_after: None,
        }
    }

    #[test]
    fn errors_are_classified_by_code_first() {
        assert_eq!(api(400, 130429).class(), ErrorClass::RateLimited);
        assert_eq!(api(400, 131056).class(), ErrorClass::RateLimited);
        assert_eq!(api(401, 190).class(), ErrorClass::Auth);
        assert_eq!(api(403, 200).class(), ErrorClass::Auth);
        assert_eq!(api(500, 131000).class(), ErrorClass::Transient);
        assert_eq!(api(503, 2).class(), ErrorClass::Transient);
        assert_eq!(api(400, 131026).class(), ErrorClass::Permanent);
        assert_eq!(api(400, 131047).class(), ErrorClass::Permanent);
        assert_eq!(api(404, 132001).class(), ErrorClass::Permanent);
        assert_eq!(
            GraphError::Status {
                status: 502,
                retry_after: None
            }
            .class(),
            ErrorClass::Transient
        );
        assert_eq!(
            GraphError::NoAnswer("timeout".into()).class(),
            ErrorClass::Transient
        );
    }

    #[test]
    fn error_bodies_are_parsed_and_secrets_free() {
        let body = br#"{"error":{"message":"(#131009) Parameter value is not valid","type":"OAuthException",
            "code":131009,"error_data":{"messaging_product":"whatsapp","details":"Recipient phone number is not valid"},
            "fbtrace_id":"AbC"}}"#;
        let error = error_from(StatusCode::BAD_REQUEST, body, None);
        assert_eq!(error.code(), Some(131009));
        assert!(error.to_string().contains("Recipient phone number is not valid"));
        let plain = error_from(StatusCode::BAD_GATEWAY, b"<html>", Some(Duration::from_secs(3)));
        assert!(matches!(plain, GraphError::Status { status: 502, .. }));
    }

    #[test]
    fn auth_failures_park_and_rate_limits_wait() {
        assert!(
            matches!(JobError::from(api(401, 190)), JobError::Park { ref on, .. } if on == TOKEN_PARK_TAG)
        );
        assert!(matches!(
            JobError::from(api(400, 130429)),
            JobError::Retry { after: Some(d), .. } if d >= Duration::from_secs(10)
        ));
        assert!(matches!(JobError::from(api(400, 131026)), JobError::Permanent(_)));
    }
}
