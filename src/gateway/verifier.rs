//! Verifying access tokens as a resource server does (the gateway): by the issuer's JWKS or by
//! introspection, always requiring the token's audience to be this resource.
//!
//! JWKS: the key set is found through the issuer's RFC 8414 metadata (`jwks_uri`) and fetched
//! through `platform::jwks` with the gateway's own client (the issuer is configured, and may be on
//! loopback); it is refreshed as its `Cache-Control` allows (1 minute to 1 hour), refetched when a
//! token names an unknown `kid` (not within 10 seconds of the last fetch or such refetch), and
//! kept when the issuer is down. Only its ES256 signing keys are used. Introspection (RFC 7662)
//! with the resource's credentials sees revocations at once; an active answer is remembered for a
//! few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use jsonwebtoken::jwk::PublicKeyUse;
use serde_json::Value;

use crate::oauth::secret;
use crate::platform::fetch::Answer;
use crate::platform::jwks::{self, Fetch, Jwks, JwksError, KeySet, Lifetime, Rules};
use crate::tokens::keys::VerifyingKey;
use crate::tokens::{self, AccessClaims, Checks, Invalid, VerifiedCache};

/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 30;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT: usize = 256 * 1024;
/// Unknown `kid`s trigger a refetch at most this often.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
const MIN_CACHE: Duration = Duration::from_secs(60);
const MAX_CACHE: Duration = Duration::from_secs(3600);
/// An active introspection answer is reused this long (or until the token expires, if sooner).
const INTROSPECTION_CACHE: Duration = Duration::from_secs(10);
const MAX_CACHED_ANSWERS: usize = 100_000;

/// Why the issuer's documents could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: {1}")]
    Http(String, String),
    #[error("{0}: {1}")]
    Document(String, &'static str),
    #[error("{0}: {1}")]
    KeySet(String, JwksError),
}

impl FetchError {
    /// What went wrong, without the URL.
    fn detail(self) -> String {
        match self {
            Self::Http(_, detail) => detail,
            Self::Document(_, detail) => detail.to_owned(),
            Self::KeySet(_, e) => e.to_string(),
        }
    }
}

/// How tokens are checked.
pub enum Verifier {
    Jwks(Arc<IssuerKeys>),
    Introspection(Introspector),
}

impl Verifier {
    /// The claims of a token valid for `resource`, or why not.
    pub async fn verify(&self, token: &str, resource: &str) -> Result<Arc<AccessClaims>, Invalid> {
        let claims = match self {
            Self::Jwks(keys) => keys.verify(token).await?,
            Self::Introspection(introspector) => introspector.verify(token).await?,
        };
        if claims.aud != resource {
            return Err(Invalid::Audience);
        }
        Ok(claims)
    }

    /// Whether tokens can be checked now (the key set is loaded; introspection is always ready).
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Jwks(keys) => !keys.keys.load().is_empty(),
            Self::Introspection(_) => true,
        }
    }
}

/// An HTTP client for the issuer's documents.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Tessera-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// GET a JSON document, bounded; with its headers.
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Answer, FetchError> {
    let err = |e: reqwest::Error| FetchError::Http(url.to_owned(), e.without_url().to_string());
    let mut res = http.get(url).header("accept", "application/json").send().await.map_err(err)?;
    if !res.status().is_success() {
        return Err(FetchError::Http(url.to_owned(), format!("HTTP {}", res.status().as_u16())));
    }
    let headers = std::mem::take(res.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(err)? {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(FetchError::Document(url.to_owned(), "too large"));
        }
        body.extend_from_slice(&chunk);
    }
    let json = serde_json::from_slice(&body).map_err(|_| FetchError::Document(url.to_owned(), "not JSON"))?;
    Ok(Answer { json, headers })
}

/// The issuer's RFC 8414 metadata: the path-inserted location first (RFC 8414 §3.1), then the
/// issuer's own path; its `issuer` must be exactly the one configured.
pub async fn issuer_metadata(http: &reqwest::Client, issuer: &str) -> Result<Value, FetchError> {
    let url = url::Url::parse(issuer).map_err(|_| FetchError::Document(issuer.to_owned(), "not a URL"))?;
    let path = url.path().trim_end_matches('/');
    let origin = url.origin().ascii_serialization();
    let mut last = None;
    for candidate in [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{issuer}/.well-known/oauth-authorization-server"),
    ] {
        match get_json(http, &candidate).await {
            Ok(answer) if answer.json["issuer"] == issuer => return Ok(answer.json),
            Ok(_) => last = Some(FetchError::Document(candidate, "names another issuer")),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| FetchError::Document(issuer.to_owned(), "no metadata")))
}

/// The issuer's signing keys, cached.
pub struct IssuerKeys {
    issuer: String,
    http: reqwest::Client,
    /// With the gateway's own client: the issuer is configured, not taken from a request.
    fetch: Fetch,
    jwks: Jwks,
    /// Where the issuer's metadata last said its keys are.
    jwks_uri: ArcSwapOption<url::Url>,
    keys: ArcSwap<HashMap<String, Arc<VerifyingKey>>>,
    /// Tokens already verified with these keys: a client sends the same token on every call, and
    /// the signature check is the costliest step. Forgotten when the key set changes.
    verified: VerifiedCache,
}

impl IssuerKeys {
    pub fn new(issuer: &str) -> Arc<Self> {
        let http = http();
        let client = http.clone();
        let fetch = Fetch::own("gateway issuer", move |url: url::Url| {
            let client = client.clone();
            async move { get_json(&client, url.as_str()).await.map_err(FetchError::detail) }
        });
        let rules = Rules {
            lifetime: Lifetime::CacheControl { min: MIN_CACHE, max: MAX_CACHE },
            unknown_kid_refetch: UNKNOWN_KID_REFETCH,
            max_sets: jwks::MAX_SETS,
        };
        Arc::new(Self {
            issuer: issuer.to_owned(),
            http,
            fetch,
            jwks: Jwks::new(rules),
            jwks_uri: ArcSwapOption::empty(),
            keys: ArcSwap::from_pointee(HashMap::new()),
            verified: VerifiedCache::default(),
        })
    }

    /// Fetch the metadata and the key set; keep the previous set on failure. How long the new
    /// set may be cached.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let metadata = issuer_metadata(&self.http, &self.issuer).await?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or_else(|| FetchError::Document(self.issuer.clone(), "metadata has no jwks_uri"))?;
        let url = url::Url::parse(jwks_uri).map_err(|_| FetchError::Document(jwks_uri.to_owned(), "not a URL"))?;
        self.jwks_uri.store(Some(Arc::new(url.clone())));
        let set = self.jwks.refresh(&url, &self.fetch).await.map_err(|e| key_set_error(jwks_uri, e))?;
        self.adopt(&set, jwks_uri)?;
        Ok(set.lifetime())
    }

    /// Use the set's ES256 signing keys, if it has any.
    fn adopt(&self, set: &KeySet, jwks_uri: &str) -> Result<(), FetchError> {
        let keys: HashMap<String, Arc<VerifyingKey>> = set
            .jwks()
            .keys
            .iter()
            .filter(|k| k.common.public_key_use.as_ref().is_none_or(|u| *u == PublicKeyUse::Signature))
            .filter_map(|k| {
                let key = VerifyingKey::from_jwk(&serde_json::to_value(k).ok()?)?;
                Some((k.common.key_id.clone()?, Arc::new(key)))
            })
            .collect();
        if keys.is_empty() {
            return Err(FetchError::Document(jwks_uri.to_owned(), "no usable ES256 key"));
        }
        let mut kids: Vec<&String> = keys.keys().collect();
        let mut before: Vec<String> = self.keys.load().keys().cloned().collect();
        kids.sort();
        before.sort();
        if kids.iter().map(|k| k.as_str()).ne(before.iter().map(String::as_str)) {
            self.keys.store(Arc::new(keys));
            self.verified.clear();
        }
        Ok(())
    }

    /// Keep the key set fresh until `stop`: refresh when the cache time runs out, and retry
    /// every 5 seconds while the issuer cannot be reached (the cached keys stay in use).
    pub async fn keep_fresh(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let wait = match self.refresh().await {
                Ok(max_age) => max_age,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh the issuer's keys; keeping the cached ones");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, Invalid> {
        if let Some(known) = self.verified.get(token) {
            return known;
        }
        let claims = match self.verify_signature(token) {
            Err(Invalid::UnknownKey) if self.refetch_for_unknown_kid().await => self.verify_signature(token),
            other => other,
        }?;
        Ok(self.verified.insert(token, claims))
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, Invalid> {
        let keys = self.keys.load();
        let checks = Checks { allow_expired: false, leeway: LEEWAY_SECS };
        tokens::verify_with(token, &self.issuer, checks, |kid| keys.get(kid).map(|k| &**k))
    }

    /// Whether the key set was fetched again (as often as `platform::jwks` allows), so the
    /// token is worth a second look.
    async fn refetch_for_unknown_kid(&self) -> bool {
        let Some(url) = self.jwks_uri.load_full() else { return false };
        let adopted = match self.jwks.refetch_for_unknown_kid(&url, &self.fetch).await {
            Ok(None) => return false,
            Ok(Some(set)) => self.adopt(&set, url.as_str()),
            Err(e) => Err(key_set_error(url.as_str(), e)),
        };
        if let Err(e) = adopted {
            tracing::warn!(error = %e, "refetching the issuer's keys for an unknown kid");
        }
        true
    }
}

fn key_set_error(jwks_uri: &str, e: JwksError) -> FetchError {
    match e {
        JwksError::Source(detail) => FetchError::Http(jwks_uri.to_owned(), detail),
        JwksError::NotAKeySet => FetchError::Document(jwks_uri.to_owned(), "no keys"),
        e => FetchError::KeySet(jwks_uri.to_owned(), e),
    }
}

/// Active answers by token digest, and until when they may be reused.
type Answers = HashMap<[u8; 32], (Arc<AccessClaims>, Instant)>;

/// Introspection with the resource's credentials.
pub struct Introspector {
    endpoint: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    cache: Mutex<Answers>,
}

impl Introspector {
    /// Find the introspection endpoint in the issuer's metadata.
    pub async fn discover(issuer: &str, client_id: &str, client_secret: &str) -> Result<Self, FetchError> {
        let http = http();
        let metadata = issuer_metadata(&http, issuer).await?;
        let endpoint = metadata["introspection_endpoint"]
            .as_str()
            .ok_or_else(|| FetchError::Document(issuer.to_owned(), "metadata has no introspection_endpoint"))?
            .to_owned();
        Ok(Self {
            endpoint,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            http,
            cache: Mutex::default(),
        })
    }

    async fn verify(&self, token: &str) -> Result<Arc<AccessClaims>, Invalid> {
        if token.len() > 4096 {
            return Err(Invalid::Malformed);
        }
        let key = secret::digest(token);
        let now = Instant::now();
        if let Some((claims, until)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned())
            && until > now
        {
            return Ok(claims);
        }
        let claims = Arc::new(self.ask(token).await?);
        let left = u64::try_from(claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0);
        let until = now + INTROSPECTION_CACHE.min(Duration::from_secs(left));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED_ANSWERS {
                cache.retain(|_, (_, t)| *t > now);
            }
            cache.insert(key, (claims.clone(), until));
        }
        Ok(claims)
    }

    async fn ask(&self, token: &str) -> Result<AccessClaims, Invalid> {
        let res = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.without_url(), "introspection failed");
                Invalid::Unverifiable
            })?;
        if !res.status().is_success() {
            tracing::warn!(status = res.status().as_u16(), "introspection refused the gateway's request");
            return Err(Invalid::Unverifiable);
        }
        let body = res.bytes().await.map_err(|_| Invalid::Unverifiable)?;
        let answer: Value = serde_json::from_slice(&body).map_err(|_| Invalid::Unverifiable)?;
        if answer["active"] != true {
            return Err(Invalid::Inactive);
        }
        serde_json::from_value(answer).map_err(|_| Invalid::Malformed)
    }
}
