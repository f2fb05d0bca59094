//! Access tokens: JWTs per RFC 9068 (`typ: at+jwt`, ES256), bound to exactly one resource.
//! Minting and verifying take the key ring and the issuer; whether a verified token is still
//! active is `revocation`'s business.

pub mod keys;
pub mod revocation;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::resources::Resource;
use crate::config::Issuer;
use crate::oauth::{scope, secret};
use crate::tokens::keys::{KeyError, KeyRing, VerifyingKey};

/// The claims of every access token Tessera issues.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id, or the client id for `client_credentials`.
    pub sub: String,
    /// The one resource URI, as a string.
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The grant the token came from (absent for `client_credentials`), so introspection can
    /// tell when it was revoked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gid: Option<Uuid>,
    /// Not before (Tessera sets none; honoured when another issuer's token carries it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nbf: Option<i64>,
}

/// A signed access token and its lifetime in seconds.
pub struct Minted {
    pub token: String,
    pub expires_in: u64,
    pub claims: AccessClaims,
}

/// Who a token is for and what it allows.
#[derive(Clone, Copy, Debug)]
pub struct Grantee<'a> {
    /// The user id, or the client id for `client_credentials`.
    pub sub: &'a str,
    pub client_id: &'a str,
    pub resource: &'a Resource,
    pub scopes: &'a [String],
    /// The grant it comes from (none for `client_credentials`).
    pub grant: Option<Uuid>,
}

/// Sign an access token for `to.resource`, with that resource's lifetime.
pub fn mint(keys: &KeyRing, issuer: &Issuer, to: Grantee<'_>) -> Result<Minted, KeyError> {
    let now = chrono::Utc::now().timestamp();
    let ttl = to.resource.token_ttl.as_secs();
    let claims = AccessClaims {
        iss: issuer.as_str().to_owned(),
        sub: to.sub.to_owned(),
        aud: to.resource.uri.clone(),
        client_id: to.client_id.to_owned(),
        scope: scope::join(to.scopes),
        iat: now,
        exp: now + i64::try_from(ttl).unwrap_or(600),
        jti: secret::new_jti(),
        gid: to.grant,
        nbf: None,
    };
    let token = keys.signing_key()?.sign_access_token(&claims)?;
    Ok(Minted { token, expires_in: ttl, claims })
}

/// Why a presented access token is not one of ours, or no longer valid (for logs only).
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Header,
    UnknownKey,
    Signature,
    Issuer,
    Expired,
    /// `nbf` in the future.
    NotYetValid,
    /// For another resource (a resource server's check).
    Audience,
    /// Introspection says it is not active (revoked, expired, unknown).
    Inactive,
    /// It could not be checked now (the issuer cannot be reached for introspection).
    Unverifiable,
}

/// What [`verify_with`] checks beyond the signature and issuer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Checks {
    /// Accept an expired token (revocation of an expired token needs its claims).
    pub allow_expired: bool,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: i64,
}

const MAX_TOKEN_LEN: usize = 4096;

/// Clock skew tolerated between the instances of one deployment, in seconds: a token one
/// instance issued stays valid on another whose clock runs up to this much ahead. Everything
/// that forgets a revoked token at its expiry keeps it this much longer.
pub const CLOCK_SKEW_LEEWAY: i64 = 10;

/// Verify an access token with our own key ring: ES256 signature by a published key, `typ`
/// at+jwt, our `iss`, and (unless `allow_expired`) `exp` in the future, give or take
/// [`CLOCK_SKEW_LEEWAY`]. Revocation is checked
/// elsewhere.
pub fn verify(keys: &KeyRing, issuer: &Issuer, token: &str, allow_expired: bool) -> Result<AccessClaims, Invalid> {
    let now = chrono::Utc::now();
    let keys = keys.snapshot();
    let checks = Checks { allow_expired, leeway: CLOCK_SKEW_LEEWAY };
    verify_with(token, issuer.as_str(), checks, |kid| keys.verification_key(kid, now).map(|k| k.verifying_key()))
}

/// Verify an RFC 9068 access token with the key its `kid` names (`key` finds it: in our ring,
/// or in an issuer's JWKS): header `alg` ES256 and `typ` at+jwt, the signature, `iss`, then
/// `exp` and `nbf` within `checks.leeway`.
pub fn verify_with<'k>(
    token: &str,
    issuer: &str,
    checks: Checks,
    key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<AccessClaims, Invalid> {
    let access_token = |h: &JwsHeader| {
        h.alg == "ES256"
            && h.typ
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"))
    };
    let payload = verify_signature(token, access_token, key)?;
    let claims: AccessClaims = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
    if claims.iss != issuer {
        return Err(Invalid::Issuer);
    }
    let now = chrono::Utc::now().timestamp();
    if !checks.allow_expired && claims.exp + checks.leeway <= now {
        return Err(Invalid::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + checks.leeway) {
        return Err(Invalid::NotYetValid);
    }
    Ok(claims)
}

/// The header of a compact JWS, as far as Tessera reads it.
#[derive(Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    pub typ: Option<String>,
    pub kid: Option<String>,
}

/// Check a compact JWS (RFC 7515): its header (`accept`), the key its `kid` names (`key`), that
/// key's algorithm is the header's, and the signature. The decoded payload.
pub fn verify_signature<'k>(
    token: &str,
    accept: impl FnOnce(&JwsHeader) -> bool,
    key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<Vec<u8>, Invalid> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    if token.len() > MAX_TOKEN_LEN {
        return Err(Invalid::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed);
    };
    let header: JwsHeader =
        B64.decode(header).ok().and_then(|h| serde_json::from_slice(&h).ok()).ok_or(Invalid::Malformed)?;
    if !accept(&header) {
        return Err(Invalid::Header);
    }
    let key = header.kid.as_deref().and_then(key).ok_or(Invalid::UnknownKey)?;
    // The key decides the algorithm; a header naming another is a confusion attempt.
    if key.alg().as_str() != header.alg {
        return Err(Invalid::Header);
    }
    let signature = B64.decode(signature).map_err(|_| Invalid::Malformed)?;
    let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
    if !key.verify(signed.as_bytes(), &signature) {
        return Err(Invalid::Signature);
    }
    B64.decode(payload).map_err(|_| Invalid::Malformed)
}

/// Access tokens whose signature and claims already verified, by SHA-256 of the token, until
/// they expire. A resource server introspects the same token on every call; this spares the
/// signature check (the costliest step) on all but the first. Revocation is checked every time.
#[derive(Default)]
pub struct VerifiedCache {
    map: std::sync::RwLock<std::collections::HashMap<[u8; 32], std::sync::Arc<AccessClaims>>>,
}

/// Beyond this many remembered tokens, start afresh.
const MAX_VERIFIED: usize = 100_000;

impl VerifiedCache {
    /// Verify `token` as [`verify`] does (expired tokens refused), remembering the result.
    pub fn verify(
        &self,
        keys: &KeyRing,
        issuer: &Issuer,
        token: &str,
    ) -> Result<std::sync::Arc<AccessClaims>, Invalid> {
        if let Some(known) = self.get(token) {
            return known;
        }
        let claims = verify(keys, issuer, token, false)?;
        Ok(self.insert(token, claims))
    }

    /// A token verified before: its claims while it has not expired, `Expired` after; `None`
    /// when it was never verified here.
    pub fn get(&self, token: &str) -> Option<Result<std::sync::Arc<AccessClaims>, Invalid>> {
        let key: [u8; 32] = crate::oauth::secret::digest(token);
        let claims = self.map.read().ok()?.get(&key).cloned()?;
        let valid = claims.exp + CLOCK_SKEW_LEEWAY > chrono::Utc::now().timestamp();
        Some(if valid { Ok(claims) } else { Err(Invalid::Expired) })
    }

    /// Remember a token whose signature and claims just verified.
    pub fn insert(&self, token: &str, claims: AccessClaims) -> std::sync::Arc<AccessClaims> {
        let key: [u8; 32] = crate::oauth::secret::digest(token);
        let now = chrono::Utc::now().timestamp();
        let claims = std::sync::Arc::new(claims);
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_VERIFIED {
                map.retain(|_, c| c.exp + CLOCK_SKEW_LEEWAY > now);
                if map.len() >= MAX_VERIFIED {
                    map.clear();
                }
            }
            map.insert(key, claims.clone());
        }
        claims
    }

    /// Forget every token (the keys they were verified with changed).
    pub fn clear(&self) {
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }

    /// Forget expired tokens.
    pub fn prune(&self) {
        let now = chrono::Utc::now().timestamp();
        if let Ok(mut map) = self.map.write() {
            map.retain(|_, c| c.exp + CLOCK_SKEW_LEEWAY > now);
        }
    }
}
