//! Keys derived from `SECRET_KEY`: sealing OAuth tokens at rest (AES-256-GCM) and signing the
//! values we hand out and later accept back (OAuth state, media and avatar links).
//!
//! Each purpose gets its own derived key, so a signature minted for one purpose can never be
//! replayed as another.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;

use crate::config::SecretKey;

type HmacSha256 = Hmac<Sha256>;

/// Leading byte of every sealed value, so the format can evolve without guessing.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;

/// What a signature is for; part of the key derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The OAuth `state` parameter.
    OAuthState,
    /// Expiring links to stored media and avatars.
    Link,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::OAuthState => b"pipedrive-whatsapp/oauth-state/v1",
            Purpose::Link => b"pipedrive-whatsapp/link/v1",
        }
    }
}

/// Sealing or opening failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The value was not produced by this key (or was altered).
    #[error("sealed value cannot be opened with this SECRET_KEY")]
    Unsealable,
}

/// Keys for every cryptographic purpose of the service.
#[derive(Clone)]
pub struct Keys {
    cipher: Aes256Gcm,
    oauth_state: [u8; 32],
    link: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys([REDACTED])")
    }
}

fn derive(root: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(root).expect("HMAC takes keys of any length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// Derives all keys from the root secret.
    pub fn new(secret: &SecretKey) -> Self {
        let root = secret.bytes();
        let token_key = derive(root, b"pipedrive-whatsapp/token-encryption/v1");
        Self {
            cipher: Aes256Gcm::new(&token_key.into()),
            oauth_state: derive(root, Purpose::OAuthState.label()),
            link: derive(root, Purpose::Link.label()),
        }
    }

    /// Encrypts `plaintext` with a fresh random nonce: `version ‖ nonce ‖ ciphertext+tag`.
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value made by [`Keys::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<SecretString, CryptoError> {
        let (&version, rest) = sealed.split_first().ok_or(CryptoError::Unsealable)?;
        if version != SEALED_V1 || rest.len() < NONCE_LEN {
            return Err(CryptoError::Unsealable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Unsealable)?;
        let plaintext = self
            .cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| CryptoError::Unsealable)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Unsealable)
    }

    fn key(&self, purpose: Purpose) -> &[u8; 32] {
        match purpose {
            Purpose::OAuthState => &self.oauth_state,
            Purpose::Link => &self.link,
        }
    }

    /// HMAC-SHA256 of `message` under the key of `purpose`, base64url without padding.
    pub fn sign(&self, purpose: Purpose, message: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(self.key(purpose)).expect("any key length");
        mac.update(message);
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks a signature made by [`Keys::sign`] in constant time.
    pub fn verify(&self, purpose: Purpose, message: &[u8], signature: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(self.key(purpose)).expect("any key length");
        mac.update(message);
        mac.verify_slice(&tag).is_ok()
    }

    /// Query string (`exp=…&sig=…`) that lets anyone holding it GET `path` until `expires_at`
    /// (Unix seconds).
    pub fn sign_link(&self, path: &str, expires_at: i64) -> String {
        let sig = self.sign(Purpose::Link, link_message(path, expires_at).as_bytes());
        format!("exp={expires_at}&sig={sig}")
    }

    /// Checks a link made by [`Keys::sign_link`] at time `now` (Unix seconds).
    pub fn verify_link(
        &self,
        path: &str,
        expires_at: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        if !self.verify(
            Purpose::Link,
            link_message(path, expires_at).as_bytes(),
            signature,
        ) {
            return Err(LinkError::BadSignature);
        }
        if now >= expires_at {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn link_message(path: &str, expires_at: i64) -> String {
    format!("{path}\n{expires_at}")
}

/// Why a signed link was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match the path and expiry.
    #[error("the link signature is not valid")]
    BadSignature,
    /// The link was valid but its time is over.
    #[error("the link has expired")]
    Expired,
}

/// Cryptographically random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random source is available");
    out
}

/// A random token of `N` bytes, base64url without padding: ids nobody can guess.
pub fn random_token<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::new(&SecretKey::parse(&base64::engine::general_purpose::STANDARD.encode([byte; 32])).unwrap())
    }

    #[test]
    fn sealing_round_trips_with_a_fresh_nonce_each_time() {
        let k = keys(7);
        let a = k.seal("v1u:token");
        let b = k.seal("v1u:token");
        assert_ne!(a, b, "same plaintext must not give the same ciphertext");
        assert!(!a.windows(9).any(|w| w == b"v1u:token"));
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&k.open(&a).unwrap()),
            "v1u:token"
        );
    }

    #[test]
    fn opening_fails_with_another_key_or_tampering() {
        let sealed = keys(1).seal("secret");
        assert_eq!(keys(2).open(&sealed).unwrap_err(), CryptoError::Unsealable);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(keys(1).open(&tampered).is_err());
        assert!(keys(1).open(&[]).is_err());
        assert!(keys(1).open(&[1, 2, 3]).is_err());
    }

    #[test]
    fn signatures_are_bound_to_their_purpose() {
        let k = keys(3);
        let sig = k.sign(Purpose::OAuthState, b"nonce");
        assert!(k.verify(Purpose::OAuthState, b"nonce", &sig));
        assert!(!k.verify(Purpose::Link, b"nonce", &sig));
        assert!(!k.verify(Purpose::OAuthState, b"other", &sig));
        assert!(!k.verify(Purpose::OAuthState, b"nonce", "not base64 !"));
    }

    #[test]
    fn links_expire_and_resist_tampering() {
        let k = keys(4);
        let query = k.sign_link("/media/abc", 1_000);
        let sig = query.split("sig=").nth(1).unwrap();
        assert_eq!(k.verify_link("/media/abc", 1_000, sig, 999), Ok(()));
        assert_eq!(
            k.verify_link("/media/abc", 1_000, sig, 1_000),
            Err(LinkError::Expired)
        );
        assert_eq!(
            k.verify_link("/media/abd", 1_000, sig, 999),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            k.verify_link("/media/abc", 2_000, sig, 999),
            Err(LinkError::BadSignature)
        );
    }
}
