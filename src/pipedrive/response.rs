//! What a Pipedrive call returns: the answer with its rate-limit headers, or a classified
//! failure that callers (and the job queue) can act on.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;
use uuid::Uuid;

use crate::queue::JobError;

/// How long to wait after a 429 that names no time.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(10);

/// A failed Pipedrive call, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum PipedriveError {
    /// The installation cannot call Pipedrive until its user installs again (refresh token
    /// refused, uninstalled, tokens missing or unreadable).
    #[error("installation {installation_id} needs re-authorization: {reason}")]
    NeedsReauth {
        /// The installation.
        installation_id: Uuid,
        /// Why.
        reason: String,
    },
    /// 429: wait `after` before the next call.
    #[error("Pipedrive rate limit reached; retry in {after:?}")]
    RateLimited {
        /// From `Retry-After`, else `x-ratelimit-reset`, else a default.
        after: Duration,
    },
    /// 404 or 410: on `/channels*` this means the Channels API is retired.
    #[error("HTTP {status} from Pipedrive: the resource does not exist (any more)")]
    Gone {
        /// 404 or 410.
        status: u16,
    },
    /// 401 for a token used directly (not through an installation).
    #[error("Pipedrive rejected the access token")]
    Unauthorized,
    /// Another 4xx, with Pipedrive's explanation.
    #[error("HTTP {status} from Pipedrive: {message}")]
    Rejected {
        /// The status.
        status: u16,
        /// `additional_data.code` (e.g. `ADMIN_ONLY`), when sent.
        code: Option<String>,
        /// Pipedrive's `error` text.
        message: String,
    },
    /// 5xx: Pipedrive failed; try again later.
    #[error("HTTP {status} from Pipedrive")]
    Server {
        /// The status.
        status: u16,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// No answer (DNS, connect, TLS, timeout).
    #[error("Pipedrive unreachable: {0}")]
    Transport(String),
    /// The OAuth server failed while refreshing the token (not an invalid grant).
    #[error("token refresh failed: {0}")]
    Refresh(String),
    /// Our database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<PipedriveError> for JobError {
    fn from(error: PipedriveError) -> Self {
        match error {
            PipedriveError::NeedsReauth {
                installation_id,
                ref reason,
            } => JobError::Park {
                on: park_tag(installation_id),
                reason: format!("{reason}; the user must install the app again"),
            },
            PipedriveError::RateLimited { after } => JobError::Defer {
                reason: error.to_string(),
                after,
            },
            PipedriveError::Server { retry_after, .. } => JobError::Retry {
                after: retry_after,
                error: error.to_string(),
            },
            PipedriveError::Transport(_)
            | PipedriveError::Refresh(_)
            | PipedriveError::Unauthorized
            | PipedriveError::Database(_) => JobError::retry(error),
            PipedriveError::Gone { .. } | PipedriveError::Rejected { .. } => JobError::permanent(error),
        }
    }
}

/// The queue tag that work for an installation parks on while it needs re-authorization.
pub fn park_tag(installation_id: Uuid) -> String {
    format!("installation:{installation_id}")
}

/// Pipedrive's rate-limit headers of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `x-ratelimit-remaining`: requests left in the current window.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`: time until the window resets.
    pub reset: Option<Duration>,
    /// `x-daily-requests-left`, when sent.
    pub daily_requests_left: Option<u64>,
}

impl RateLimit {
    /// Reads the headers of a response.
    pub(super) fn from_headers(headers: &HeaderMap) -> Self {
        Self {
            remaining: number(headers, "x-ratelimit-remaining"),
            reset: number(headers, "x-ratelimit-reset").map(Duration::from_secs),
            daily_requests_left: number(headers, "x-daily-requests-left"),
        }
    }
}

fn number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct PipedriveResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (`Null` when empty or not JSON).
    pub body: Value,
    /// Rate-limit headers.
    pub rate_limit: RateLimit,
}

/// Turns a non-success answer into the error callers act on.
pub(super) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &Value,
    rate_limit: RateLimit,
) -> PipedriveError {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match status.as_u16() {
        401 => PipedriveError::Unauthorized,
        404 | 410 => PipedriveError::Gone {
            status: status.as_u16(),
        },
        429 => PipedriveError::RateLimited {
            after: retry_after
                .or(rate_limit.reset)
                .unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        },
        s if s >= 500 => PipedriveError::Server {
            status: s,
            retry_after,
        },
        s => PipedriveError::Rejected {
            status: s,
            code: ["/additional_data/code", "/code", "/error_code"]
                .iter()
                .find_map(|p| body.pointer(p).and_then(Value::as_str))
                .map(str::to_string),
            message: ["/error", "/message", "/data/message"]
                .iter()
                .find_map(|p| body.pointer(p).and_then(Value::as_str))
                .map_or_else(
                    || status.canonical_reason().unwrap_or("request refused").to_string(),
                    str::to_string,
                ),
        },
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn statuses_are_classified_for_callers() {
        let none = HeaderMap::new();
        let limit = RateLimit::from_headers(&headers(&[("x-ratelimit-reset", "2")]));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &headers(&[("retry-after", "7")]), &Value::Null, limit),
            PipedriveError::RateLimited { after } if after == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &none, &Value::Null, limit),
            PipedriveError::RateLimited { after } if after == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify(StatusCode::GONE, &none, &Value::Null, RateLimit::default()),
            PipedriveError::Gone { status: 410 }
        ));
        let admin_only = json!({"success": false, "error": "Only admins can register channels",
            "additional_data": {"code": "ADMIN_ONLY"}});
        match classify(StatusCode::FORBIDDEN, &none, &admin_only, RateLimit::default()) {
            PipedriveError::Rejected {
                status,
                code,
                message,
            } => {
                assert_eq!((status, code.as_deref()), (403, Some("ADMIN_ONLY")));
                assert_eq!(message, "Only admins can register channels");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &none, &Value::Null, RateLimit::default()),
            PipedriveError::Server { status: 502, .. }
        ));
    }

    #[test]
    fn errors_map_to_queue_outcomes() {
        let id = Uuid::now_v7();
        let parked = JobError::from(PipedriveError::NeedsReauth {
            installation_id: id,
            reason: "x".into(),
        });
        assert!(matches!(parked, JobError::Park { ref on, .. } if *on == format!("installation:{id}")));
        assert!(matches!(
            JobError::from(PipedriveError::RateLimited { after: Duration::from_secs(3) }),
            JobError::Defer { after, .. } if after == Duration::from_secs(3)
        ));
        assert!(matches!(
            JobError::from(PipedriveError::Server {
                status: 503,
                retry_after: None
            }),
            JobError::Retry { .. }
        ));
        assert!(matches!(
            JobError::from(PipedriveError::Transport("reset".into())),
            JobError::Retry { .. }
        ));
        assert!(matches!(
            JobError::from(PipedriveError::Rejected {
                status: 400,
                code: None,
                message: "bad".into()
            }),
            JobError::Permanent(_)
        ));
        assert!(matches!(
            JobError::from(PipedriveError::Gone { status: 404 }),
            JobError::Permanent(_)
        ));
    }

    #[test]
    fn rate_limit_headers_are_read() {
        let limit = RateLimit::from_headers(&headers(&[
            ("x-ratelimit-remaining", "79"),
            ("x-ratelimit-reset", "2"),
            ("x-daily-requests-left", "9000"),
        ]));
        assert_eq!(
            limit,
            RateLimit {
                remaining: Some(79),
                reset: Some(Duration::from_secs(2)),
                daily_requests_left: Some(9000),
            }
        );
    }
}
