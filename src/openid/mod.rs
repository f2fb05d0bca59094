//! Tessera as OpenID provider (Tessera as relying party is `signin::federation`).
//!
//! OpenID Connect Core 1.0 on the authorization code flow: the ID token (§2, §3.1.3.6, §12.2),
//! the claims the `profile` and `email` scopes release (§5.4), the OpenID client metadata
//! Tessera honours (Registration §2), and reading an ID token back as a hint (§3.1.2.1, RP-
//! initiated logout §2).
//!
//! An access token is bound to one resource. A client that asks for `openid` and names no
//! resource gets a token for the userinfo endpoint; one that names an MCP server gets a token
//! for that server, which userinfo refuses. Either way the ID token carries the claims its
//! scopes release, so no client needs userinfo to learn who signed in. RP-initiated logout is
//! [`logout`].

pub mod logout;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::clients::Client;
use crate::config::Issuer;
use std::sync::Arc;

use crate::oauth::scope;
use crate::store::profile::Profile;
use crate::tokens::keys::{Alg, KeyError, KeyRing, LoadedKey};
use crate::tokens::revocation::Revocation;
use crate::tokens::{self, Invalid, JwsHeader, VerifiedCache};

/// The algorithm of a client's ID tokens when it registered none: OpenID's mandatory one.
pub const DEFAULT_ID_TOKEN_ALG: Alg = Alg::Rs256;
/// The longest `max_age` / `default_max_age` honoured as given (ten years).
pub const MAX_AGE_LIMIT: i64 = 10 * 365 * 24 * 3600;

/// Whether a grant's scopes make it an OpenID Connect grant (one that yields ID tokens).
pub fn is_openid(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s == scope::OPENID)
}

/// The claims about the user that the granted scopes release (Core §5.4); absent ones are left out.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// `profile`: `name` (when set), `preferred_username`, `updated_at`; `email`: `email` and
/// `email_verified` (when an email is set).
pub fn user_claims(user: &Profile, scopes: &[String]) -> UserClaims {
    let has = |s: &str| scopes.iter().any(|g| g == s);
    let mut claims = UserClaims::default();
    if has(scope::PROFILE) {
        claims.name = user.name.clone();
        claims.preferred_username = Some(user.username.clone());
        claims.updated_at = Some(user.updated_at.timestamp());
    }
    if has(scope::EMAIL)
        && let Some(email) = &user.email
    {
        claims.email = Some(email.clone());
        claims.email_verified = Some(user.email_verified);
    }
    claims
}

/// The claims of an ID token.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The client, alone.
    pub aud: String,
    /// The client again: the party the token was issued to.
    pub azp: String,
    pub exp: i64,
    pub iat: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auth_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub at_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    #[serde(flatten)]
    pub user: UserClaims,
}

/// How and when the user signed in for the grant, and the request's nonce (the code exchange
/// only: a refreshed ID token has no nonce, Core §12.2).
#[derive(Clone, Copy, Debug, Default)]
pub struct SignIn<'a> {
    pub auth_time: Option<DateTime<Utc>>,
    pub sid: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// What an ID token is issued with: beside an access token, whose lifetime it shares (so the
/// keys that sign it stay published as long as it lives).
pub struct Issue<'a> {
    pub client: &'a Client,
    pub user: &'a Profile,
    pub scopes: &'a [String],
    pub access_token: &'a str,
    pub lifetime_seconds: u64,
    pub sign_in: SignIn<'a>,
}

/// An ID token ready to be signed: its claims and the key of the client's algorithm.
pub struct Unsigned {
    key: Arc<LoadedKey>,
    claims: IdTokenClaims,
}

impl Unsigned {
    /// Sign it (RS256: the costliest step of an OpenID code exchange, about 0.4 ms of CPU).
    pub fn sign(self) -> Result<String, KeyError> {
        self.key.sign_id_token(&self.claims)
    }
}

/// The ID token for `to.client`, to be signed with its registered algorithm.
pub fn id_token(keys: &KeyRing, issuer: &Issuer, to: &Issue<'_>) -> Result<Unsigned, KeyError> {
    let now = Utc::now().timestamp();
    let claims = IdTokenClaims {
        iss: issuer.as_str().to_owned(),
        sub: to.user.id.to_string(),
        aud: to.client.client_id.clone(),
        azp: to.client.client_id.clone(),
        exp: now + i64::try_from(to.lifetime_seconds).unwrap_or(600),
        iat: now,
        auth_time: to.sign_in.auth_time.map(|t| t.timestamp()),
        nonce: to.sign_in.nonce.map(str::to_owned),
        at_hash: Some(at_hash(to.access_token)),
        sid: to.sign_in.sid.filter(|s| !s.is_empty()).map(str::to_owned),
        user: user_claims(to.user, to.scopes),
    };
    Ok(Unsigned { key: keys.signing_key_for(id_token_alg(to.client))?, claims })
}

/// `at_hash` (Core §3.1.3.6): the left half of the SHA-256 of the access token, base64url. (Both
/// RS256 and ES256 hash with SHA-256.)
pub fn at_hash(access_token: &str) -> String {
    use base64::Engine as _;
    let digest = Sha256::digest(access_token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The client's `id_token_signed_response_alg`, or RS256.
pub fn id_token_alg(client: &Client) -> Alg {
    client.metadata["id_token_signed_response_alg"].as_str().and_then(Alg::parse).unwrap_or(DEFAULT_ID_TOKEN_ALG)
}

/// The client's `default_max_age`, in seconds.
pub fn default_max_age(client: &Client) -> Option<i64> {
    client.metadata["default_max_age"].as_i64()
}

/// The client's registered `post_logout_redirect_uris`.
pub fn post_logout_redirect_uris(client: &Client) -> impl Iterator<Item = &str> {
    client.metadata["post_logout_redirect_uris"].as_array().into_iter().flatten().filter_map(|v| v.as_str())
}

/// Whether a session that signed in at `auth_time` is recent enough for `max_age` seconds.
pub fn fresh_enough(auth_time: DateTime<Utc>, max_age: Option<i64>, now: DateTime<Utc>) -> bool {
    max_age.is_none_or(|max| (now - auth_time).num_seconds() <= max && max > 0)
}

/// An ID token of ours read back as a hint: who it names, for which client, in which session.
#[derive(Debug, Deserialize)]
pub struct Hint {
    pub sub: String,
    pub aud: String,
    #[serde(default)]
    pub sid: Option<String>,
}

/// Read an `id_token_hint`: signed by one of our published keys (with the key's own algorithm),
/// `typ` JWT, issued by us. It may have expired (Core §3.1.2.1: it is a hint about a past sign-in).
pub fn read_hint(keys: &KeyRing, issuer: &Issuer, token: &str) -> Result<Hint, Invalid> {
    #[derive(Deserialize)]
    struct Claims {
        iss: String,
        #[serde(flatten)]
        hint: Hint,
    }
    let now = Utc::now();
    let keys = keys.snapshot();
    let id_token = |h: &JwsHeader| h.typ.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("JWT"));
    let payload =
        tokens::verify_signature(token, id_token, |kid| keys.verification_key(kid, now).map(|k| k.verifying_key()))?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| Invalid::Malformed)?;
    if claims.iss != issuer.as_str() {
        return Err(Invalid::Issuer);
    }
    Ok(claims.hint)
}

/// What the userinfo endpoint needs from the server.
pub struct UserinfoParts<'a> {
    pub pool: &'a sqlx::PgPool,
    pub keys: &'a KeyRing,
    pub issuer: &'a Issuer,
    pub verified: &'a VerifiedCache,
    pub revocation: &'a Revocation,
    /// The userinfo endpoint's URI: the audience its tokens carry.
    pub audience: &'a str,
}

/// Why userinfo refuses a token (RFC 6750 §3.1).
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    /// Not ours, expired, revoked, for another resource, or its user is gone or disabled.
    #[error("{0}")]
    InvalidToken(&'static str),
    /// A token for userinfo without the `openid` scope.
    #[error("the access token lacks the openid scope")]
    InsufficientScope,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The userinfo answer (Core §5.3.2): `sub` and the claims the token's scopes release.
#[derive(Debug, Serialize)]
pub struct Userinfo {
    pub sub: String,
    #[serde(flatten)]
    pub claims: UserClaims,
}

/// Userinfo for a bearer access token: ours, unexpired, active, issued for the userinfo
/// endpoint (a token for an MCP server is refused), with the `openid` scope, of a user who is
/// still enabled.
pub async fn userinfo(p: &UserinfoParts<'_>, token: &str) -> Result<Userinfo, UserinfoError> {
    let claims = p.verified.verify(p.keys, p.issuer, token).map_err(|e| match e {
        Invalid::Expired => UserinfoError::InvalidToken("the access token has expired"),
        _ => UserinfoError::InvalidToken("the access token is not valid here"),
    })?;
    if claims.aud != p.audience {
        return Err(UserinfoError::InvalidToken(
            "the access token was issued for another resource; ask for the openid scope without a resource",
        ));
    }
    if !p.revocation.is_active(&claims).await? {
        return Err(UserinfoError::InvalidToken("the access token is no longer active"));
    }
    let scopes: Vec<String> = claims.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if !is_openid(&scopes) {
        return Err(UserinfoError::InsufficientScope);
    }
    let user = match claims.sub.parse::<uuid::Uuid>() {
        Ok(id) => crate::store::users::by_id(p.pool, id).await?,
        Err(_) => None,
    };
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Err(UserinfoError::InvalidToken("the user of this access token no longer exists"));
    };
    Ok(Userinfo { sub: claims.sub.clone(), claims: user_claims(&user.profile(), &scopes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_spec_example() {
        // OpenID Connect Core, Appendix A.3 (RS256 example): access_token and its at_hash.
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn max_age() {
        let now = Utc::now();
        let signed_in = now - chrono::Duration::seconds(100);
        assert!(fresh_enough(signed_in, None, now));
        assert!(fresh_enough(signed_in, Some(100), now));
        assert!(!fresh_enough(signed_in, Some(99), now));
        assert!(!fresh_enough(now, Some(0), now), "max_age=0 always asks for a sign-in");
    }

    fn user() -> Profile {
        Profile {
            id: uuid::Uuid::nil(),
            username: "alice".into(),
            email: Some("alice@example.com".into()),
            name: None,
            email_verified: true,
            updated_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn claims_follow_the_scopes() {
        let scopes = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(user_claims(&user(), &scopes(&["openid"])), UserClaims::default());
        let profile = user_claims(&user(), &scopes(&["openid", "profile"]));
        assert_eq!(profile.preferred_username.as_deref(), Some("alice"));
        assert_eq!(profile.updated_at, Some(1_700_000_000));
        assert_eq!((profile.name, profile.email), (None, None));
        let email = user_claims(&user(), &scopes(&["openid", "email"]));
        assert_eq!((email.email.as_deref(), email.email_verified), (Some("alice@example.com"), Some(true)));
        let no_email = Profile { email: None, ..user() };
        assert_eq!(user_claims(&no_email, &scopes(&["email"])).email_verified, None);
    }
}
