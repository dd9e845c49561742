//! The one client for Pipedrive's API: it acts as an installation, attaching its access token,
//! refreshing it shortly before expiry (or once after a 401) and retrying once.
//!
//! Refreshing is single-flight: callers in one process wait on a per-installation lock, and a
//! row lock on the installation keeps other replicas out while one refreshes, because a rotated
//! refresh token used twice is dead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::oauth::{OAuthError, PipedriveOAuth};
use super::response::{PipedriveError, PipedriveResponse, RateLimit, classify};
use crate::crypto::Keys;
use crate::store::installations::{self, Credentials, InstallationStatus};

/// Tokens closer than this to their expiry are refreshed before use.
const REFRESH_MARGIN: TimeDelta = TimeDelta::minutes(5);

/// Decrypted credentials of an installation, with the sealed token as their version.
struct Session {
    api_domain: String,
    access_token: SecretString,
    expires_at: Option<DateTime<Utc>>,
    version: Vec<u8>,
}

/// Pipedrive's API, acting as installations. Cheap to clone.
#[derive(Clone)]
pub struct PipedriveClient {
    inner: Arc<Inner>,
}

struct Inner {
    db: PgPool,
    http: reqwest::Client,
    keys: Arc<Keys>,
    oauth: PipedriveOAuth,
    refreshing: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for PipedriveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipedriveClient").finish_non_exhaustive()
    }
}

impl PipedriveClient {
    /// A client reading installations from `db`; `http` must not follow redirects.
    pub fn new(db: PgPool, http: reqwest::Client, keys: Arc<Keys>, oauth: PipedriveOAuth) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                http,
                keys,
                oauth,
                refreshing: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The app's OAuth client.
    pub fn oauth(&self) -> &PipedriveOAuth {
        &self.inner.oauth
    }

    /// Calls `path` (e.g. `/api/v1/channels`) on the installation's API domain with its token,
    /// refreshing the token when it is about to expire or was refused, and retrying once.
    #[tracing::instrument(skip_all, fields(%installation_id, %method, path))]
    pub async fn request(
        &self,
        installation_id: Uuid,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<PipedriveResponse, PipedriveError> {
        let credentials = installations::credentials(&self.inner.db, installation_id).await?;
        self.request_as(installation_id, credentials, method, path, body)
            .await
    }

    /// [`request`](Self::request) with the installation's credentials read by the caller, in a
    /// statement of its own that had to run anyway (a delivery reads them with its message).
    pub async fn request_as(
        &self,
        installation_id: Uuid,
        credentials: Option<Credentials>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<PipedriveResponse, PipedriveError> {
        let mut session = self.open(installation_id, credentials)?;
        let left = session.expires_at.map(|at| at - Utc::now());
        if left.is_none_or(|left| left < REFRESH_MARGIN) {
            match self.refresh(installation_id, &session.version).await {
                Ok(fresh) => session = fresh,
                // A token with some life left still works while the OAuth server is down.
                Err(PipedriveError::Refresh(error)) if left.is_some_and(|l| l > TimeDelta::seconds(30)) => {
                    tracing::warn!(%error, "early token refresh failed; using the current token");
                }
                Err(error) => return Err(error),
            }
        }
        let first = self
            .request_with_token(
                &session.api_domain,
                &session.access_token,
                method.clone(),
                path,
                body,
            )
            .await;
        if !matches!(first, Err(PipedriveError::Unauthorized)) {
            return first;
        }
        tracing::info!("access token refused; refreshing once");
        session = self.refresh(installation_id, &session.version).await?;
        match self
            .request_with_token(&session.api_domain, &session.access_token, method, path, body)
            .await
        {
            Err(PipedriveError::Unauthorized) => {
                let reason = "Pipedrive refused a freshly refreshed access token";
                self.needs_reauth(installation_id, reason).await?;
                Err(PipedriveError::NeedsReauth {
                    installation_id,
                    reason: reason.into(),
                })
            }
            other => other,
        }
    }

    /// Calls `path` on `api_domain` with an access token held by the caller (the install flow
    /// before the installation is stored). A 401 is returned as [`PipedriveError::Unauthorized`].
    pub async fn request_with_token(
        &self,
        api_domain: &str,
        access_token: &SecretString,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<PipedriveResponse, PipedriveError> {
        let url = format!("{}{path}", api_domain.trim_end_matches('/'));
        let mut request = self
            .inner
            .http
            .request(method, &url)
            .bearer_auth(access_token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PipedriveError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PipedriveError::Transport(e.without_url().to_string()))?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let rate_limit = RateLimit::from_headers(&headers);
        if status.is_success() {
            return Ok(PipedriveResponse {
                status: status.as_u16(),
                body,
                rate_limit,
            });
        }
        Err(classify(status, &headers, &body, rate_limit))
    }

    /// The decrypted credentials, if the installation may call Pipedrive.
    fn open(&self, installation_id: Uuid, row: Option<Credentials>) -> Result<Session, PipedriveError> {
        let reauth = |reason: &str| PipedriveError::NeedsReauth {
            installation_id,
            reason: reason.into(),
        };
        let row = row.ok_or_else(|| reauth("no such installation"))?;
        match row.status {
            InstallationStatus::Active => {}
            InstallationStatus::NeedsReauth => return Err(reauth("the refresh token was refused")),
            InstallationStatus::Uninstalled => return Err(reauth("the app was uninstalled")),
        }
        let version = row
            .access_token_enc
            .ok_or_else(|| reauth("no access token stored"))?;
        let access_token = self
            .inner
            .keys
            .open(&version)
            .map_err(|_| reauth("the stored token cannot be decrypted with this SECRET_KEY"))?;
        Ok(Session {
            api_domain: row.api_domain,
            access_token,
            expires_at: row.token_expires_at,
            version,
        })
    }

    /// Refreshes the installation's tokens unless another caller already replaced the token
    /// sealed as `stale`; returns the current credentials either way.
    async fn refresh(&self, installation_id: Uuid, stale: &[u8]) -> Result<Session, PipedriveError> {
        let lock = self.refresh_lock(installation_id);
        let result = {
            let _flight = lock.lock().await;
            self.refresh_locked(installation_id, stale).await
        };
        drop(lock);
        self.forget_idle_lock(installation_id);
        result
    }

    async fn refresh_locked(&self, installation_id: Uuid, stale: &[u8]) -> Result<Session, PipedriveError> {
        let mut tx = self.inner.db.begin().await?;
        let row = installations::lock_credentials(&mut tx, installation_id).await?;
        let refresh_enc = row.as_ref().and_then(|r| r.refresh_token_enc.clone());
        let current = self.open(installation_id, row)?;
        if current.version != stale {
            return Ok(current);
        }
        let refresh_token = refresh_enc
            .and_then(|sealed| self.inner.keys.open(&sealed).ok())
            .ok_or_else(|| PipedriveError::NeedsReauth {
                installation_id,
                reason: "no readable refresh token stored".into(),
            })?;
        match self.inner.oauth.refresh(&refresh_token).await {
            Ok(tokens) => {
                let api_domain = tokens
                    .api_domain
                    .as_deref()
                    .and_then(|d| super::api_domain(d).ok());
                let access_enc = self.inner.keys.seal(tokens.access_token.expose_secret());
                let refresh_enc = self.inner.keys.seal(
                    tokens
                        .refresh_token
                        .as_ref()
                        .unwrap_or(&refresh_token)
                        .expose_secret(),
                );
                installations::store_refreshed(
                    &mut tx,
                    installation_id,
                    &access_enc,
                    &refresh_enc,
                    tokens.expires_at,
                    api_domain.as_deref(),
                )
                .await?;
                tx.commit().await?;
                tracing::info!(%installation_id, "access token refreshed");
                Ok(Session {
                    api_domain: api_domain.unwrap_or(current.api_domain),
                    access_token: tokens.access_token,
                    expires_at: Some(tokens.expires_at),
                    version: access_enc,
                })
            }
            Err(OAuthError::InvalidGrant(reason)) => {
                let reason = format!("the refresh token was refused ({reason})");
                installations::mark_needs_reauth(&mut *tx, installation_id, &reason).await?;
                tx.commit().await?;
                tracing::warn!(%installation_id, "installation needs re-authorization: refresh token refused");
                Err(PipedriveError::NeedsReauth {
                    installation_id,
                    reason,
                })
            }
            Err(other) => Err(PipedriveError::Refresh(other.to_string())),
        }
    }

    async fn needs_reauth(&self, installation_id: Uuid, reason: &str) -> Result<(), PipedriveError> {
        if installations::mark_needs_reauth(&self.inner.db, installation_id, reason).await? {
            tracing::warn!(%installation_id, reason, "installation needs re-authorization");
        }
        Ok(())
    }

    fn refresh_lock(&self, installation_id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.refreshing.lock().expect("lock map is never poisoned");
        locks.entry(installation_id).or_default().clone()
    }

    /// Drops the installation's lock once nobody holds or waits for it, keeping the map small.
    fn forget_idle_lock(&self, installation_id: Uuid) {
        let mut locks = self.inner.refreshing.lock().expect("lock map is never poisoned");
        if locks
            .get(&installation_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&installation_id);
        }
    }
}
