//! PKCE (RFC 7636), S256 only: OAuth 2.1 requires it for every client and `plain` is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// 43 to 128 characters of the unreserved set (RFC 7636 §4.1, §4.2).
fn is_unreserved_43_128(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Validate the authorization request's `code_challenge` and `code_challenge_method`.
pub fn parse_challenge(challenge: Option<&str>, method: Option<&str>) -> Result<String, &'static str> {
    let challenge = challenge.ok_or("code_challenge is required (PKCE with S256)")?;
    match method {
        Some("S256") => {}
        None => return Err("code_challenge_method is required and must be S256"),
        Some("plain") => return Err("code_challenge_method plain is not allowed; use S256"),
        Some(_) => return Err("code_challenge_method must be S256"),
    }
    if !is_unreserved_43_128(challenge) {
        return Err("code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]");
    }
    Ok(challenge.to_owned())
}

/// The S256 challenge of a verifier (RFC 7636 §4.2): BASE64URL(SHA256(verifier)).
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Check a `code_verifier` against the stored S256 challenge, in constant time.
pub fn verify(verifier: &str, challenge: &str) -> bool {
    if !is_unreserved_43_128(verifier) {
        return false;
    }
    challenge_of(verifier).as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(parse_challenge(Some(challenge), Some("S256")).unwrap(), challenge);
        assert!(verify(verifier, challenge));
        assert!(!verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", challenge));
    }

    #[test]
    fn challenge_rules() {
        let ok = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(parse_challenge(None, Some("S256")).is_err());
        assert!(parse_challenge(Some(ok), None).is_err());
        assert!(parse_challenge(Some(ok), Some("plain")).is_err());
        assert!(parse_challenge(Some(ok), Some("s256")).is_err());
        assert!(parse_challenge(Some("short"), Some("S256")).is_err());
        assert!(parse_challenge(Some(&"a".repeat(129)), Some("S256")).is_err());
        assert!(parse_challenge(Some(&format!("{}+", &ok[..42])), Some("S256")).is_err());
        assert!(parse_challenge(Some(&"a".repeat(128)), Some("S256")).is_ok());
    }

    #[test]
    fn verifier_must_be_well_formed() {
        // A too-short verifier fails even if its digest matched.
        let short = "abc";
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(short.as_bytes()));
        assert!(!verify(short, &challenge));
    }
}
