//! HTTP Basic authentication of calls from Pipedrive: every provider, video and uninstall call
//! carries `base64(client_id:client_secret)` of our app.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::PipedriveConfig;
use crate::http::error::ApiError;
use crate::state::AppState;

/// SHA-256 digests of the expected credentials. Comparing digests keeps the comparison
/// constant-time even in the length of the secret.
#[derive(Clone)]
pub struct PipedriveCredentials {
    user: [u8; 32],
    password: [u8; 32],
}

impl std::fmt::Debug for PipedriveCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PipedriveCredentials([REDACTED])")
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl PipedriveCredentials {
    /// The app's client id and secret.
    pub fn new(config: &PipedriveConfig) -> Self {
        Self {
            user: digest(config.client_id.as_bytes()),
            password: digest(config.client_secret.expose_secret().as_bytes()),
        }
    }

    /// Accepts the request only if its Basic credentials are the app's.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let unauthorized = |why: &str| {
            ApiError::Unauthorized(format!(
                "{why}: expected HTTP Basic auth with the app's client id and secret"
            ))
        };
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("Missing Authorization header"))?
            .to_str()
            .map_err(|_| unauthorized("Malformed Authorization header"))?;
        let (scheme, encoded) = value
            .split_once(' ')
            .ok_or_else(|| unauthorized("Malformed Authorization header"))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized("Unsupported authorization scheme"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| unauthorized("Malformed Basic credentials"))?;
        let split = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| unauthorized("Malformed Basic credentials"))?;
        let (user, password) = (&decoded[..split], &decoded[split + 1..]);
        let user_ok = digest(user).ct_eq(&self.user);
        let password_ok = digest(password).ct_eq(&self.password);
        if bool::from(user_ok & password_ok) {
            Ok(())
        } else {
            Err(unauthorized("Invalid credentials"))
        }
    }
}

/// Middleware for routes Pipedrive calls: 401 in the contract's shape unless the Basic
/// credentials match.
pub async fn require_pipedrive(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    state.pipedrive_credentials.check(request.headers())?;
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use secrecy::SecretString;

    use super::*;

    fn creds() -> PipedriveCredentials {
        PipedriveCredentials::new(&PipedriveConfig {
            client_id: "client".into(),
            client_secret: SecretString::from("s3cret:with:colons"),
            oauth_url: "https://oauth.pipedrive.com".parse().unwrap(),
            ui_jwt_secret: SecretString::from("s3cret:with:colons"),
        })
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn accepts_the_app_credentials_only() {
        let c = creds();
        assert!(c.check(&headers(&basic("client", "s3cret:with:colons"))).is_ok());
        assert!(c.check(&headers(&basic("client", "s3cret:with:colon"))).is_err());
        assert!(c.check(&headers(&basic("other", "s3cret:with:colons"))).is_err());
        assert!(c.check(&headers("Bearer abc")).is_err());
        assert!(c.check(&headers("Basic !!!")).is_err());
        assert!(c.check(&headers("Basic")).is_err());
        assert!(c.check(&HeaderMap::new()).is_err());
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let value = basic("client", "s3cret:with:colons").replace("Basic", "bAsIc");
        assert!(creds().check(&headers(&value)).is_ok());
    }
}
