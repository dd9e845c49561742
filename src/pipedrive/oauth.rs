//! OAuth 2.0 with Pipedrive: the authorize URL, the code exchange and the refresh (through the
//! `oauth2` crate), and the signed, expiring, single-use `state` that binds a callback to the
//! redirect we issued.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, RedirectUrl, RefreshToken, RequestTokenError, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::{PipedriveConfig, PublicUrl};
use crate::crypto::{Keys, Purpose, random_token};
use crate::store;

/// How long an issued `state` is accepted.
pub const STATE_TTL: Duration = Duration::from_secs(10 * 60);

/// Access-token lifetime assumed when Pipedrive omits `expires_in` (it documents 60 minutes).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The path of our OAuth callback; also where Pipedrive sends uninstall and sharing notices.
pub const CALLBACK_PATH: &str = "/auth/pipedrive/callback";

/// Pipedrive adds the company's API base URL to every token response.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PipedriveTokenFields {
    /// Base URL of the company's API, e.g. `https://acme.pipedrive.com`.
    #[serde(default)]
    pub api_domain: Option<String>,
}

impl ExtraTokenFields for PipedriveTokenFields {}

type PipedriveTokenResponse = StandardTokenResponse<PipedriveTokenFields, BasicTokenType>;

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    PipedriveTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Tokens as Pipedrive's OAuth server issued them.
#[derive(Debug)]
pub struct TokenSet {
    /// Bearer token for API calls.
    pub access_token: SecretString,
    /// Refresh token; `None` when the server did not send one (keep the old one).
    pub refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// Granted scopes (Pipedrive separates them with commas).
    pub scopes: Vec<String>,
    /// Base URL of the company's API.
    pub api_domain: Option<String>,
}

/// A failed token request. Messages carry Pipedrive's explanation, never a token or code.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The code or refresh token is invalid, expired or already used: only a new consent helps.
    #[error("Pipedrive refused the grant: {0}")]
    InvalidGrant(String),
    /// Pipedrive refused the request for another reason (client credentials, redirect URI…).
    #[error("Pipedrive's OAuth server refused the request: {0}")]
    Rejected(String),
    /// The OAuth server could not be reached or answered something unreadable.
    #[error("Pipedrive's OAuth server is unavailable: {0}")]
    Unavailable(String),
}

/// Pipedrive's OAuth server, as our app.
#[derive(Clone)]
pub struct PipedriveOAuth {
    client: OAuthClient,
    http: reqwest::Client,
}

impl std::fmt::Debug for PipedriveOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipedriveOAuth")
            .field("token_url", &self.client.token_uri().as_str())
            .finish_non_exhaustive()
    }
}

impl PipedriveOAuth {
    /// The app's OAuth client; `http` must not follow redirects.
    pub fn new(config: &PipedriveConfig, public_url: &PublicUrl, http: reqwest::Client) -> Self {
        let base = config.oauth_url.as_str().trim_end_matches('/');
        let client = oauth2::Client::new(ClientId::new(config.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                config.client_secret.expose_secret().to_string(),
            ))
            .set_auth_uri(AuthUrl::new(format!("{base}/oauth/authorize")).expect("OAuth base URL is valid"))
            .set_token_uri(TokenUrl::new(format!("{base}/oauth/token")).expect("OAuth base URL is valid"))
            .set_redirect_uri(RedirectUrl::new(public_url.join(CALLBACK_PATH)).expect("PUBLIC_URL is valid"));
        Self { client, http }
    }

    /// Where to send the browser to ask for consent (scopes are chosen in Developer Hub).
    pub fn authorize_url(&self, state: String) -> url::Url {
        self.client.authorize_url(|| CsrfToken::new(state)).url().0
    }

    /// Exchanges an authorization code for tokens.
    #[tracing::instrument(skip_all)]
    pub async fn exchange_code(&self, code: &str) -> Result<TokenSet, OAuthError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        Ok(token_set(&response))
    }

    /// Exchanges a refresh token for new tokens.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, OAuthError> {
        let refresh_token = RefreshToken::new(refresh_token.expose_secret().to_string());
        let response = self
            .client
            .exchange_refresh_token(&refresh_token)
            .request_async(&self.http)
            .await
            .map_err(classify)?;
        Ok(token_set(&response))
    }
}

fn token_set(response: &PipedriveTokenResponse) -> TokenSet {
    let lifetime = response.expires_in().unwrap_or(DEFAULT_TOKEN_LIFETIME);
    TokenSet {
        access_token: SecretString::from(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().clone())),
        expires_at: Utc::now() + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::hours(1)),
        scopes: response
            .scopes()
            .into_iter()
            .flatten()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        api_domain: response.extra_fields().api_domain.clone(),
    }
}

fn classify<RE: std::error::Error>(error: RequestTokenError<RE, BasicErrorResponse>) -> OAuthError {
    match error {
        RequestTokenError::ServerResponse(response) => {
            let text = match response.error_description() {
                Some(description) => format!("{}: {description}", response.error()),
                None => response.error().to_string(),
            };
            if *response.error() == BasicErrorResponseType::InvalidGrant {
                OAuthError::InvalidGrant(text)
            } else {
                OAuthError::Rejected(text)
            }
        }
        // Pipedrive's error bodies do not always follow RFC 6749 (`{"success":false,
        // "message":"Invalid grant: refresh_token is invalid"}`), so look at the text too. The
        // body is never quoted: an unreadable success answer would carry the tokens.
        RequestTokenError::Parse(error, body) => {
            let lower = String::from_utf8_lossy(&body).to_ascii_lowercase();
            if lower.contains("invalid_grant") || lower.contains("invalid grant") {
                OAuthError::InvalidGrant("the code or refresh token is invalid or expired".into())
            } else if lower.contains("invalid_client") || lower.contains("invalid client") {
                OAuthError::Rejected("the client id or secret is not valid".into())
            } else {
                OAuthError::Unavailable(format!("unreadable answer (at `{}`)", error.path()))
            }
        }
        RequestTokenError::Request(error) => OAuthError::Unavailable(error_chain(&error)),
        RequestTokenError::Other(text) => OAuthError::Unavailable(text),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Why a callback's `state` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// The callback carries no state.
    #[error("the request carries no state parameter")]
    Missing,
    /// The state was not issued by this service (or was altered).
    #[error("the state parameter was not issued by this service")]
    Forged,
    /// The state is older than ten minutes.
    #[error("the installation link has expired")]
    Expired,
    /// The state has already been used.
    #[error("this installation link has already been used")]
    Replayed,
}

/// A new `state`: `nonce.expiry.signature`, valid for [`STATE_TTL`] from `now`.
pub fn issue_state(keys: &Keys, now: DateTime<Utc>) -> String {
    let nonce = random_token::<16>();
    let expires = (now + TimeDelta::from_std(STATE_TTL).expect("small duration")).timestamp();
    let message = format!("{nonce}.{expires}");
    let signature = keys.sign(Purpose::OAuthState, message.as_bytes());
    format!("{message}.{signature}")
}

/// A verified state: its nonce and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateClaims {
    /// Random part, redeemed once.
    pub nonce: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// Checks the signature and expiry of a state (not whether it was used before).
pub fn verify_state(keys: &Keys, state: &str, now: DateTime<Utc>) -> Result<StateClaims, StateError> {
    let (message, signature) = state.rsplit_once('.').ok_or(StateError::Forged)?;
    if !keys.verify(Purpose::OAuthState, message.as_bytes(), signature) {
        return Err(StateError::Forged);
    }
    let (nonce, expires) = message.split_once('.').ok_or(StateError::Forged)?;
    let expires_at = expires
        .parse::<i64>()
        .ok()
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        .ok_or(StateError::Forged)?;
    if now >= expires_at {
        return Err(StateError::Expired);
    }
    Ok(StateClaims {
        nonce: nonce.to_string(),
        expires_at,
    })
}

/// A state refused, or the database failing while redeeming it.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// The state itself is not acceptable.
    #[error(transparent)]
    State(#[from] StateError),
    /// The database could not record the redemption.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Verifies a callback's state and consumes it, so it is accepted only once.
pub async fn redeem_state(db: &PgPool, keys: &Keys, state: Option<&str>) -> Result<(), RedeemError> {
    let state = state.filter(|s| !s.is_empty()).ok_or(StateError::Missing)?;
    let claims = verify_state(keys, state, Utc::now())?;
    let mut conn = db.acquire().await?;
    if store::installations::redeem_state(&mut conn, &claims.nonce, claims.expires_at).await? {
        Ok(())
    } else {
        Err(StateError::Replayed.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretKey;

    fn keys() -> Keys {
        Keys::new(&SecretKey::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap())
    }

    #[test]
    fn states_verify_until_they_expire() {
        let k = keys();
        let now = Utc::now();
        let state = issue_state(&k, now);
        let claims = verify_state(&k, &state, now + TimeDelta::minutes(9)).unwrap();
        assert_eq!(claims.nonce.len(), 22);
        assert_eq!(
            verify_state(&k, &state, now + TimeDelta::minutes(10)),
            Err(StateError::Expired)
        );
        assert_ne!(issue_state(&k, now), state, "each state has its own nonce");
    }

    #[test]
    fn altered_or_foreign_states_are_forged() {
        let k = keys();
        let now = Utc::now();
        let state = issue_state(&k, now);
        let (nonce, rest) = state.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let later = format!("{nonce}.{}.{signature}", now.timestamp() + 86_400);
        for bad in [later.as_str(), "abc", "a.b.c", "", &state[1..]] {
            assert_eq!(verify_state(&k, bad, now), Err(StateError::Forged), "{bad}");
        }
        let other = Keys::new(&SecretKey::parse(&"A".repeat(43)).unwrap());
        assert_eq!(verify_state(&other, &state, now), Err(StateError::Forged));
    }
}
