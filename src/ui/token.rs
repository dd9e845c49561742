//! The JWT Pipedrive signs when it loads a custom UI extension (`?token=` on the iframe URL) or
//! hands one to the page (`GET_SIGNED_TOKEN`): HS256 with the extension's secret, naming the
//! company and user looking at the page. Nothing is shown or answered without one.
//!
//! Pipedrive does not document the claim names; both spellings seen in the wild are accepted.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// Clock skew tolerated on `exp`.
const LEEWAY_SECONDS: u64 = 30;

/// Who is looking at the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    /// Pipedrive company id.
    pub company_id: i64,
    /// Pipedrive user id.
    pub user_id: i64,
}

/// Why a token was refused. The reasons go to the log, never to the page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// No token came with the request.
    #[error("no token")]
    Missing,
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, another algorithm, malformed, or no `exp`.
    #[error("the token is not valid ({0})")]
    Invalid(String),
    /// Signed, but it names no company or user.
    #[error("the token names no company or user")]
    NoViewer,
    /// The `userId`/`companyId` of the URL are not the ones signed in the token.
    #[error("the URL names another user or company than the token")]
    Mismatch,
}

/// Verifies tokens signed with one secret.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &SecretString) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp"]);
        // Pipedrive's audience value is undocumented; the signature and expiry are what count.
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// The viewer a token names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Viewer, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        match (
            id_claim(&claims, &["companyId", "company_id"]),
            id_claim(&claims, &["userId", "user_id"]),
        ) {
            (Some(company_id), Some(user_id)) => Ok(Viewer { company_id, user_id }),
            _ => Err(TokenError::NoViewer),
        }
    }
}

impl Viewer {
    /// Checks the plain `companyId`/`userId` of the URL (when given) against the signed ones.
    pub fn matches(&self, company_id: Option<&str>, user_id: Option<&str>) -> Result<(), TokenError> {
        let agrees =
            |given: Option<&str>, signed: i64| given.is_none_or(|g| g.trim().parse::<i64>() == Ok(signed));
        if agrees(company_id, self.company_id) && agrees(user_id, self.user_id) {
            Ok(())
        } else {
            Err(TokenError::Mismatch)
        }
    }
}

/// A numeric id under one of `names`, written as a number or a string of digits.
fn id_claim(claims: &Map<String, Value>, names: &[&str]) -> Option<i64> {
    names.iter().find_map(|name| match claims.get(*name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "extension-secret";

    fn sign(alg: Algorithm, secret: &str, claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(&SecretString::from(SECRET))
    }

    fn in_an_hour() -> i64 {
        chrono::Utc::now().timestamp() + 3600
    }

    #[test]
    fn both_claim_spellings_and_id_types_are_read() {
        let camel = sign(
            Algorithm::HS256,
            SECRET,
            json!({"userId": 7, "companyId": 11, "exp": in_an_hour()}),
        );
        let snake = sign(
            Algorithm::HS256,
            SECRET,
            json!({"user_id": "7", "company_id": "11", "exp": in_an_hour(), "iat": 1}),
        );
        for token in [camel, snake] {
            assert_eq!(
                verifier().verify(&token),
                Ok(Viewer {
                    company_id: 11,
                    user_id: 7
                })
            );
        }
    }

    #[test]
    fn forged_expired_unsigned_and_incomplete_tokens_are_refused() {
        let claims = json!({"userId": 7, "companyId": 11, "exp": in_an_hour()});
        let forged = sign(Algorithm::HS256, "another-secret", claims.clone());
        assert!(matches!(verifier().verify(&forged), Err(TokenError::Invalid(_))));
        let unsigned = {
            use base64::Engine;
            let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            format!(
                "{}.{}.",
                part(json!({"alg": "none", "typ": "JWT"})),
                part(claims.clone())
            )
        };
        assert!(matches!(
            verifier().verify(&unsigned),
            Err(TokenError::Invalid(_))
        ));
        let other_alg = sign(Algorithm::HS512, SECRET, claims.clone());
        assert!(matches!(
            verifier().verify(&other_alg),
            Err(TokenError::Invalid(_))
        ));
        let expired = sign(
            Algorithm::HS256,
            SECRET,
            json!({"userId": 7, "companyId": 11, "exp": chrono::Utc::now().timestamp() - 120}),
        );
        assert_eq!(verifier().verify(&expired), Err(TokenError::Expired));
        let no_exp = sign(Algorithm::HS256, SECRET, json!({"userId": 7, "companyId": 11}));
        assert!(matches!(verifier().verify(&no_exp), Err(TokenError::Invalid(_))));
        let no_user = sign(
            Algorithm::HS256,
            SECRET,
            json!({"companyId": 11, "exp": in_an_hour()}),
        );
        assert_eq!(verifier().verify(&no_user), Err(TokenError::NoViewer));
        assert_eq!(verifier().verify(" "), Err(TokenError::Missing));
        assert!(matches!(
            verifier().verify("not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn the_url_ids_must_agree_with_the_signed_ones() {
        let viewer = Viewer {
            company_id: 11,
            user_id: 7,
        };
        assert_eq!(viewer.matches(Some("11"), Some("7")), Ok(()));
        assert_eq!(viewer.matches(None, None), Ok(()));
        assert_eq!(viewer.matches(Some("12"), Some("7")), Err(TokenError::Mismatch));
        assert_eq!(viewer.matches(Some("11"), Some("x")), Err(TokenError::Mismatch));
    }
}
