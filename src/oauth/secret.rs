//! Secrets Tessera generates (codes, refresh tokens, client secrets, registration tokens,
//! session and request handles): 256 random bits, base64url (unreserved characters only),
//! stored as SHA-256 and compared in constant time. High-entropy secrets need no slow hash.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// A secret value whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// 256 random bits.
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
    }

    /// 256 bits from elsewhere (a keyed derivation), in the same form.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> [u8; 32] {
        digest(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

pub fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Hex SHA-256, for audit records that must identify an argument without storing it.
pub fn digest_hex(value: &str) -> String {
    hex::encode(digest(value))
}

/// Compare a presented secret with a stored digest in constant time.
pub fn verify(presented: &str, stored_digest: &[u8]) -> bool {
    digest(presented).ct_eq(stored_digest).into()
}

/// A new client id: 128 random bits, base64url, starting with a letter or digit (so it can
/// never be mistaken for an option on a command line).
pub fn new_client_id() -> String {
    loop {
        let id = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        if id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return id;
        }
    }
}

/// A token id (`jti`): 128 random bits.
pub fn new_jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unreserved_and_redacted() {
        let s = Secret::generate();
        assert_eq!(s.expose().len(), 43);
        assert!(s.expose().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert!(verify(s.expose(), &s.digest()));
        assert!(!verify("other", &s.digest()));
        assert_ne!(Secret::generate(), s);
        assert_eq!(new_client_id().len(), 22);
    }
}
