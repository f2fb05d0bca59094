//! Sign-in through an upstream identity provider (generic OpenID Connect with presets for Google
//! and Microsoft Entra, or GitHub): the round trip that starts at the login page and comes back
//! to `/login/upstream/{name}/callback`, then the provider's allowlists and the local account.
//!
//! Each round trip has a fresh 256-bit `state`; the browser session keeps only its digest, the
//! provider's name and the pending authorization request (sealed under the master key), and the
//! PKCE verifier and OpenID `nonce` are derived from the state with a key of their own, so none
//! of them is stored. A callback is used once: the session forgets the round trip before the code
//! is exchanged. Upstream tokens are used here and dropped: MCP clients and servers only ever see
//! Tessera's own tokens, whose `sub` is the local account's stable id. Every fetch goes through
//! `platform::fetch` (public addresses only, unless the operator allowed a private network).

pub mod accounts;
pub mod github;
pub mod providers;
pub mod relying_party;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use subtle::ConstantTimeEq as _;

pub use self::accounts::{Found, Refusal};
use crate::config::MasterKey;
use crate::oauth::secret::{self, Secret};
use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::platform::fetch::{self, FetchError, Reach};
use crate::platform::jwks::{self, Fetch, Jwks, JwksError, Lifetime, Rules};
use crate::store::upstreams::{self, Upstream};
use crate::store::users::User;

/// How long a round trip to the provider may take before its callback is refused.
const ROUND_TRIP: Duration = Duration::from_secs(600);
const MAX_ANSWER: usize = 256 * 1024;
/// A key set is refetched for an unknown `kid` at most this often.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);

/// A person as the provider describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The provider's stable id for the person (OIDC `sub`, GitHub's user id).
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    /// Upstream groups (OIDC `groups` claim) or GitHub organizations.
    pub groups: Vec<String>,
}

impl Identity {
    pub fn verified_email(&self) -> Option<&str> {
        self.email.as_deref().filter(|_| self.email_verified)
    }
}

/// Why the provider's answer could not be used (the person sees it; the audit keeps it).
#[derive(Clone, Debug, thiserror::Error)]
pub enum Failure {
    #[error("the identity provider could not be reached ({0})")]
    Unreachable(String),
    #[error("the identity provider is misconfigured: {0}")]
    Discovery(String),
    #[error("the identity provider refused the code exchange ({0})")]
    Token(String),
    #[error("the identity provider's ID token {0}")]
    IdToken(String),
    #[error("the identity provider answered unexpectedly ({0})")]
    Upstream(String),
}

/// How a round trip ended, short of a signed-in person.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("there is no identity provider {0}")]
    UnknownProvider(String),
    #[error("this sign-in has expired or was already completed")]
    NoPendingLogin,
    #[error("this sign-in does not match the one this browser started")]
    StateMismatch,
    #[error("the identity provider did not sign you in ({0})")]
    Denied(String),
    #[error(transparent)]
    Failed(#[from] Failure),
    #[error("{0}")]
    Refused(Refusal),
    #[error("the identity provider's client secret cannot be decrypted with this master key")]
    Sealed,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A round trip in progress, as the browser session keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pending {
    upstream: String,
    state_digest: String,
    /// The authorization request handle, sealed under the master key.
    request: Option<String>,
    started_at: i64,
}

/// What the provider sent back to the callback.
#[derive(Debug, Default)]
pub struct Callback<'a> {
    pub state: Option<&'a str>,
    pub code: Option<&'a str>,
    pub error: Option<&'a str>,
    /// RFC 9207: the issuer of the answer, if the provider says.
    pub iss: Option<&'a str>,
}

/// A completed sign-in.
pub struct SignedIn {
    pub user: User,
    pub found: Found,
    /// The authorization request to continue, if the round trip started from one.
    pub request: Option<String>,
}

struct Cached<T> {
    at: Instant,
    value: Arc<T>,
}

/// The providers' discovery documents and key sets, and the keys of the round trip.
pub struct Federation {
    master: MasterKey,
    derive: hmac::Key,
    issuer: String,
    /// One request to a provider.
    timeout: Duration,
    providers: Mutex<HashMap<String, Cached<relying_party::Provider>>>,
    key_sets: Jwks,
}

impl Federation {
    /// `issuer`: Tessera's own (the callback is under it).
    pub fn new(master: &MasterKey, issuer: &str, timeout: Duration) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, master.as_bytes());
        let derived = hmac::sign(&root, b"tessera: upstream login pkce and nonce, v1");
        Self {
            master: master.clone(),
            derive: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            issuer: issuer.trim_end_matches('/').to_owned(),
            timeout,
            providers: Mutex::default(),
            key_sets: Jwks::new(Rules {
                lifetime: Lifetime::Fixed(relying_party::CACHE),
                unknown_kid_refetch: UNKNOWN_KID_REFETCH,
                max_sets: jwks::MAX_SETS,
            }),
        }
    }

    /// Where fetches to this provider may go.
    fn reach(&self, upstream: &Upstream) -> Reach {
        Reach {
            loopback: false,
            private_network: upstream.allow_private_network,
            timeout: self.timeout,
            max_bytes: MAX_ANSWER,
        }
    }

    /// Where the provider sends the person back: register this with the provider.
    pub fn redirect_uri(&self, name: &str) -> String {
        format!("{}/login/upstream/{name}/callback", self.issuer)
    }

    fn derived(&self, purpose: &str, state: &str) -> String {
        B64URL.encode(hmac::sign(&self.derive, format!("{purpose}\0{state}").as_bytes()).as_ref())
    }

    /// Start a round trip: the provider's authorization URL, and what the session keeps.
    pub async fn begin(
        &self,
        pool: &PgPool,
        name: &str,
        request: Option<&str>,
    ) -> Result<(String, Pending), FederationError> {
        let upstream =
            upstreams::get(pool, name).await?.ok_or_else(|| FederationError::UnknownProvider(name.into()))?;
        let state = Secret::generate();
        let state = state.expose();
        let endpoint = match upstream.kind.as_str() {
            "github" => github::authorize_url(&web_url(&upstream)?)?,
            _ => self.provider(&upstream).await?.authorization_endpoint.clone(),
        };
        let challenge = crate::oauth::pkce::challenge_of(&self.derived("pkce", state));
        let mut url = endpoint;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &upstream.client_id)
                .append_pair("redirect_uri", &self.redirect_uri(name))
                .append_pair("scope", &upstream.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if upstream.kind != "github" {
                q.append_pair("nonce", &self.derived("nonce", state));
            }
        }
        let request = match request {
            Some(handle) => Some(
                B64URL.encode(
                    crate::tokens::keys::encrypt(&self.master, "upstream-login", handle.as_bytes())
                        .map_err(|_| FederationError::Sealed)?,
                ),
            ),
            None => None,
        };
        let pending = Pending {
            upstream: name.to_owned(),
            state_digest: secret::digest_hex(state),
            request,
            started_at: chrono::Utc::now().timestamp(),
        };
        Ok((url.into(), pending))
    }

    /// Finish a round trip (`pending`: what the session kept, already removed from it) and
    /// audit how it ended.
    pub async fn finish(
        &self,
        pool: &PgPool,
        audit: &AuditSink,
        meta: &RequestMeta,
        name: &str,
        pending: Option<Pending>,
        callback: Callback<'_>,
    ) -> Result<SignedIn, FederationError> {
        let result = self.try_finish(pool, name, pending, &callback).await;
        let event = match &result {
            Ok(done) => Event::new("login.success", Outcome::Success)
                .subject(done.user.id.to_string())
                .detail(format!("upstream {name}, {:?}", done.found)),
            Err(FederationError::Refused(refusal)) => Event::new("login.federated_refused", Outcome::Denied)
                .detail(format!("upstream {name}: {}", refusal.code())),
            Err(e) => {
                let outcome = if matches!(e, FederationError::Database(_)) { Outcome::Error } else { Outcome::Denied };
                Event::new("login.federated_failed", outcome).detail(format!("upstream {name}: {e}"))
            }
        };
        audit.record(event.during(meta)).await;
        result
    }

    async fn try_finish(
        &self,
        pool: &PgPool,
        name: &str,
        pending: Option<Pending>,
        callback: &Callback<'_>,
    ) -> Result<SignedIn, FederationError> {
        let pending = pending.ok_or(FederationError::NoPendingLogin)?;
        let expired = chrono::Utc::now().timestamp() - pending.started_at > ROUND_TRIP.as_secs() as i64;
        if expired {
            return Err(FederationError::NoPendingLogin);
        }
        let state = callback.state.unwrap_or("");
        let digest_ok: bool = secret::digest_hex(state).as_bytes().ct_eq(pending.state_digest.as_bytes()).into();
        if !digest_ok || pending.upstream != name {
            return Err(FederationError::StateMismatch);
        }
        if let Some(error) = callback.error {
            let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
            return Err(FederationError::Denied(code));
        }
        let code = callback
            .code
            .filter(|c| !c.is_empty() && c.len() <= 2048)
            .ok_or(FederationError::Denied("no code".into()))?;
        let upstream =
            upstreams::get(pool, name).await?.ok_or_else(|| FederationError::UnknownProvider(name.into()))?;
        // A mix-up attack sends another provider's answer here (RFC 9207 §2.4).
        if upstream.kind == "oidc" && callback.iss.is_some_and(|iss| iss != upstream.issuer) {
            return Err(Failure::Upstream("the callback names another issuer".into()).into());
        }
        let identity = self.identify(&upstream, state, code).await?;
        accounts::admit(&upstream, &identity).map_err(FederationError::Refused)?;
        let (user, found) =
            accounts::account_for(pool, &upstream, &identity).await?.map_err(FederationError::Refused)?;
        let request = match pending.request {
            Some(sealed) => {
                let sealed = B64URL.decode(sealed).map_err(|_| FederationError::StateMismatch)?;
                let handle = crate::tokens::keys::decrypt(&self.master, "upstream-login", &sealed)
                    .map_err(|_| FederationError::StateMismatch)?;
                Some(String::from_utf8(handle).map_err(|_| FederationError::StateMismatch)?)
            }
            None => None,
        };
        Ok(SignedIn { user, found, request })
    }

    /// Exchange the code and read the person: the ID token (and userinfo for what it lacks), or
    /// GitHub's API.
    async fn identify(&self, upstream: &Upstream, state: &str, code: &str) -> Result<Identity, FederationError> {
        let secret = crate::tokens::keys::decrypt(
            &self.master,
            &format!("upstream:{}", upstream.name),
            &upstream.client_secret_enc,
        )
        .map_err(|_| FederationError::Sealed)?;
        let secret = String::from_utf8(secret).map_err(|_| FederationError::Sealed)?;
        let reach = self.reach(upstream);
        let verifier = self.derived("pkce", state);
        let redirect_uri = self.redirect_uri(&upstream.name);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        if upstream.kind == "github" {
            form.extend([("client_id", upstream.client_id.as_str()), ("client_secret", secret.as_str())]);
            let tokens = exchange(&github::token_url(&web_url(upstream)?)?, reach, HeaderMap::new(), &form).await?;
            let token = access_token(&tokens)?;
            let api = match &upstream.api_url {
                Some(api) => api.clone(),
                None => github::default_api(&web_url(upstream)?),
            };
            return Ok(github::identity(&api, token, !upstream.required_groups.is_empty(), reach).await?);
        }
        let provider = self.provider(upstream).await?;
        let mut headers = HeaderMap::new();
        if provider.secret_in_body {
            form.extend([("client_id", upstream.client_id.as_str()), ("client_secret", secret.as_str())]);
        } else {
            headers.insert(header::AUTHORIZATION, basic(&upstream.client_id, &secret)?);
        }
        let tokens = exchange(&provider.token_endpoint, reach, headers, &form).await?;
        let id_token =
            tokens["id_token"].as_str().ok_or_else(|| Failure::IdToken("is missing from the answer".into()))?;
        let (kid, alg) = relying_party::header(id_token, &provider)?;
        let key = self.key(upstream, &provider, kid.as_deref()).await?;
        let nonce = self.derived("nonce", state);
        let mut identity = relying_party::verify_id_token(id_token, &key, alg, &provider, &upstream.client_id, &nonce)?;
        if (identity.email.is_none() || identity.groups.is_empty() && !upstream.required_groups.is_empty())
            && let Some(userinfo) = &provider.userinfo_endpoint
        {
            let mut headers = HeaderMap::new();
            let bearer = HeaderValue::from_str(&format!("Bearer {}", access_token(&tokens)?))
                .map_err(|_| Failure::Token("a malformed access token".into()))?;
            headers.insert(header::AUTHORIZATION, bearer);
            let claims =
                fetch::get_json(userinfo, reach, headers).await.map_err(|e| fetch_failure("userinfo", e))?.json;
            relying_party::merge_userinfo(&mut identity, &claims)?;
        }
        Ok(identity)
    }

    /// The provider's discovery document, cached for an hour.
    async fn provider(&self, upstream: &Upstream) -> Result<Arc<relying_party::Provider>, Failure> {
        let cache_key = format!("{}\0{}", upstream.name, upstream.issuer);
        if let Ok(cache) = self.providers.lock()
            && let Some(hit) = cache.get(&cache_key).filter(|c| c.at.elapsed() < relying_party::CACHE)
        {
            return Ok(hit.value.clone());
        }
        let url =
            url::Url::parse(&format!("{}/.well-known/openid-configuration", upstream.issuer.trim_end_matches('/')))
                .map_err(|_| Failure::Discovery("its issuer is not a URL".into()))?;
        let doc = fetch::get_json(&url, self.reach(upstream), HeaderMap::new())
            .await
            .map_err(|e| fetch_failure("discovery", e))?
            .json;
        let provider = Arc::new(relying_party::provider(&upstream.issuer, &doc, upstream.allow_private_network)?);
        if let Ok(mut cache) = self.providers.lock() {
            cache.insert(cache_key, Cached { at: Instant::now(), value: provider.clone() });
        }
        Ok(provider)
    }

    /// The key for an ID token: from the cached key set, refetched when it is old or (at most
    /// once a minute) when it lacks the token's `kid`.
    async fn key(
        &self,
        upstream: &Upstream,
        provider: &relying_party::Provider,
        kid: Option<&str>,
    ) -> Result<jsonwebtoken::DecodingKey, Failure> {
        let how = Fetch::Guarded(self.reach(upstream));
        self.key_sets.decoding_key(&provider.jwks_uri, kid, &how).await.map_err(|e| match e {
            JwksError::Fetch(e) => fetch_failure("jwks", e),
            JwksError::UnknownKey => Failure::IdToken("is signed with a key the provider does not publish".into()),
            JwksError::NotAKeySet => Failure::Discovery("its key set is not a JWK set".into()),
            e => Failure::Discovery(format!("its key set cannot be used ({e})")),
        })
    }
}

/// GitHub's web address (a base URL, with a trailing slash).
fn web_url(upstream: &Upstream) -> Result<url::Url, Failure> {
    url::Url::parse(&format!("{}/", upstream.issuer.trim_end_matches('/')))
        .map_err(|_| Failure::Discovery("its address is not a URL".into()))
}

/// `client_secret_basic` (RFC 6749 §2.3.1: both parts form-urlencoded first).
fn basic(client_id: &str, secret: &str) -> Result<HeaderValue, Failure> {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)));
    HeaderValue::from_str(&format!("Basic {credentials}"))
        .map_err(|_| Failure::Token("unusable client credentials".into()))
}

/// POST to a token endpoint: the JSON answer, or the provider's error code.
async fn exchange(url: &url::Url, reach: Reach, headers: HeaderMap, form: &[(&str, &str)]) -> Result<Value, Failure> {
    let answer = match fetch::post_form(url, reach, headers, form).await {
        Ok(answer) => answer.json,
        Err(FetchError::Status(status, Some(body))) => {
            return Err(Failure::Token(error_code(&body).unwrap_or_else(|| format!("HTTP {status}"))));
        }
        Err(e) => return Err(fetch_failure("token", e)),
    };
    // GitHub answers errors with 200.
    if let Some(code) = error_code(&answer) {
        return Err(Failure::Token(code));
    }
    Ok(answer)
}

fn error_code(body: &Value) -> Option<String> {
    let code = body["error"].as_str()?;
    Some(code.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect())
}

fn access_token(tokens: &Value) -> Result<&str, Failure> {
    tokens["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Token("no access token in the answer".into()))
}

fn fetch_failure(what: &str, e: FetchError) -> Failure {
    match e {
        FetchError::Timeout(_) | FetchError::Fetch | FetchError::Resolve => {
            Failure::Unreachable(format!("{what}: {e}"))
        }
        e => Failure::Upstream(format!("{what}: {e}")),
    }
}
