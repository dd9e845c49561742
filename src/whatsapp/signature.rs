//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw request body, keyed with the Meta app secret.
//! Verified over the exact bytes received, before any parsing.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// Not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// Well-formed but not made with our app secret over this body.
    #[error("X-Hub-Signature-256 does not match the body")]
    Mismatch,
}

/// Checks `header` (the raw header value, if any) against `body` in constant time.
pub fn verify(app_secret: &[u8], header: Option<&[u8]>, body: &[u8]) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .strip_prefix(b"sha256=")
        .filter(|h| h.len() == 64)
        .ok_or(SignatureError::Malformed)?;
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body` (used by tests and the load generator).
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_the_signed_bytes() {
        let body = br#"{"text":"caf\u00e9 \/ ok"}"#;
        let header = sign(b"secret", body);
        assert_eq!(verify(b"secret", Some(header.as_bytes()), body), Ok(()));
        assert_eq!(
            verify(
                b"secret",
                Some(header.as_bytes()),
                r#"{"text":"café / ok"}"#.as_bytes()
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(header.as_bytes()), body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_missing_and_malformed_headers() {
        assert_eq!(verify(b"s", None, b"{}"), Err(SignatureError::Missing));
        for bad in [&b"sha1=00"[..], b"sha256=", b"sha256=zz", &[0xff, 0xfe][..]] {
            assert_eq!(verify(b"s", Some(bad), b"{}"), Err(SignatureError::Malformed));
        }
        let upper = sign(b"s", b"{}").to_uppercase().replace("SHA256=", "sha256=");
        assert_eq!(verify(b"s", Some(upper.as_bytes()), b"{}"), Ok(()));
    }
}
