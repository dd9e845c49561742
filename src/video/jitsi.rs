//! Jitsi Meet join links. A public deployment needs only the room in the URL; a self-hosted one
//! with token authentication (prosody `token` auth, `JWT_APP_ID`/`JWT_APP_SECRET`) also needs an
//! HS256 token naming the room, valid around the meeting's time.

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::JitsiConfig;

/// A join token is accepted from this long before the start until this long after the end, so
/// early joiners and overrunning meetings are not locked out.
pub const TOKEN_MARGIN: TimeDelta = TimeDelta::hours(1);

/// The audience Jitsi's token authentication expects.
pub const AUDIENCE: &str = "jitsi";

/// Builds join links for the configured Jitsi deployment.
#[derive(Clone)]
pub struct Jitsi {
    base: Url,
    tokens: Option<TokenIssuer>,
}

#[derive(Clone)]
struct TokenIssuer {
    app_id: String,
    key: EncodingKey,
}

/// The claims of a join token, as Jitsi's token authentication reads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The deployment's `JWT_APP_ID`.
    pub iss: String,
    /// The XMPP domain or tenant the token is for: `*`, because a deployment's internal domain
    /// (e.g. docker-jitsi-meet's `meet.jitsi`) rarely equals its public host.
    pub sub: String,
    /// The only room the token opens.
    pub room: String,
    /// When the token was made (Unix seconds).
    pub iat: i64,
    /// Not valid before (Unix seconds).
    pub nbf: i64,
    /// Not valid after (Unix seconds).
    pub exp: i64,
}

/// Signing a join token failed (a bug: HMAC signing of in-memory claims does not fail).
#[derive(Debug, thiserror::Error)]
#[error("signing the Jitsi join token failed: {0}")]
pub struct TokenError(#[from] jsonwebtoken::errors::Error);

impl Jitsi {
    /// Join links for `config`'s deployment, signed when it has JWT credentials.
    pub fn new(config: &JitsiConfig) -> Self {
        let mut base = config.url.clone();
        base.set_query(None);
        base.set_fragment(None);
        let tokens = config.jwt.as_ref().map(|jwt| TokenIssuer {
            app_id: jwt.app_id.clone(),
            key: EncodingKey::from_secret(jwt.app_secret.expose_secret().as_bytes()),
        });
        Self { base, tokens }
    }

    /// The link to `room` for a meeting from `start` to `end`.
    pub fn join_url(
        &self,
        room: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<String, TokenError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("JITSI_URL is validated as http(s), which always has a path")
            .pop_if_empty()
            .push(room);
        if let Some(tokens) = &self.tokens {
            let claims = tokens.claims(room, start, end, Utc::now());
            let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.key)?;
            url.query_pairs_mut().append_pair("jwt", &token);
        }
        Ok(url.into())
    }
}

impl TokenIssuer {
    fn claims(&self, room: &str, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> JoinClaims {
        JoinClaims {
            aud: AUDIENCE.into(),
            iss: self.app_id.clone(),
            sub: "*".into(),
            room: room.into(),
            iat: now.timestamp(),
            nbf: (start - TOKEN_MARGIN).timestamp(),
            exp: (end + TOKEN_MARGIN).timestamp(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use jsonwebtoken::{DecodingKey, Validation};
    use secrecy::SecretString;

    use super::*;
    use crate::config::JitsiJwtConfig;

    fn jitsi(url: &str, jwt: Option<(&str, &str)>) -> Jitsi {
        Jitsi::new(&JitsiConfig {
            url: url.parse().unwrap(),
            jwt: jwt.map(|(app_id, secret)| JitsiJwtConfig {
                app_id: app_id.into(),
                app_secret: SecretString::from(secret),
            }),
        })
    }

    fn window() -> (DateTime<Utc>, DateTime<Utc>) {
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 14, 30, 0).unwrap();
        (start, start + TimeDelta::minutes(45))
    }

    #[test]
    fn public_jitsi_links_are_the_room_below_the_base_url() {
        let (start, end) = window();
        for (base, expected) in [
            ("https://meet.jit.si", "https://meet.jit.si/demo-ab12"),
            ("https://meet.jit.si/", "https://meet.jit.si/demo-ab12"),
            ("https://example.com/jitsi", "https://example.com/jitsi/demo-ab12"),
            (
                "https://example.com/jitsi/?x=1#f",
                "https://example.com/jitsi/demo-ab12",
            ),
        ] {
            let j = jitsi(base, None);
            assert_eq!(j.join_url("demo-ab12", start, end).unwrap(), expected);
        }
    }

    #[test]
    fn self_hosted_links_carry_a_token_for_the_room_and_window() {
        let (start, end) = window();
        let url = jitsi("https://meet.example.org/", Some(("crm", "s3cret")))
            .join_url("demo-ab12", start, end)
            .unwrap();
        let (link, token) = url.split_once("?jwt=").unwrap();
        assert_eq!(link, "https://meet.example.org/demo-ab12");

        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&["crm"]);
        validation.validate_exp = false;
        let claims =
            jsonwebtoken::decode::<JoinClaims>(token, &DecodingKey::from_secret(b"s3cret"), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims.room, "demo-ab12");
        assert_eq!(claims.sub, "*");
        assert_eq!(claims.nbf, (start - TOKEN_MARGIN).timestamp());
        assert_eq!(claims.exp, (end + TOKEN_MARGIN).timestamp());
        assert!(
            jsonwebtoken::decode::<JoinClaims>(token, &DecodingKey::from_secret(b"other"), &validation)
                .is_err(),
            "a token must not verify with another secret"
        );
    }
}
