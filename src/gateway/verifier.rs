//! Verifying access tokens as a resource server does (the gateway): by the issuer's JWKS or by
//! introspection, always requiring the token's audience to be this resource.
//!
//! JWKS: the key set is found through the issuer's RFC 8414 metadata (`jwks_uri`), cached for as
//! long as its `Cache-Control` allows (1 minute to 1 hour), refetched at once when a token names
//! an unknown `kid` (at most every 10 seconds), and kept when the issuer is down. Introspection
//! (RFC 7662) with the resource's credentials sees revocations at once; an active answer is
//! remembered for a few seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::oauth::secret;
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

/// GET a JSON document, bounded; with its `Cache-Control: max-age`.
async fn get_json(http: &reqwest::Client, url: &str) -> Result<(Value, Option<Duration>), FetchError> {
    let err = |e: reqwest::Error| FetchError::Http(url.to_owned(), e.without_url().to_string());
    let mut res = http.get(url).header("accept", "application/json").send().await.map_err(err)?;
    if !res.status().is_success() {
        return Err(FetchError::Http(url.to_owned(), format!("HTTP {}", res.status().as_u16())));
    }
    let max_age = res
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok()))
        .map(Duration::from_secs);
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(err)? {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(FetchError::Document(url.to_owned(), "too large"));
        }
        body.extend_from_slice(&chunk);
    }
    let doc = serde_json::from_slice(&body).map_err(|_| FetchError::Document(url.to_owned(), "not JSON"))?;
    Ok((doc, max_age))
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
            Ok((doc, _)) if doc["issuer"] == issuer => return Ok(doc),
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
    keys: ArcSwap<HashMap<String, Arc<VerifyingKey>>>,
    /// Tokens already verified with these keys: a client sends the same token on every call, and
    /// the signature check is the costliest step. Forgotten when the key set changes.
    verified: VerifiedCache,
    /// When the cached set may be refreshed on demand again.
    next_on_demand: Mutex<Instant>,
}

impl IssuerKeys {
    pub fn new(issuer: &str) -> Arc<Self> {
        Arc::new(Self {
            issuer: issuer.to_owned(),
            http: http(),
            keys: ArcSwap::from_pointee(HashMap::new()),
            verified: VerifiedCache::default(),
            next_on_demand: Mutex::new(Instant::now()),
        })
    }

    /// Fetch the metadata and the key set; keep the previous set on failure. How long the new
    /// set may be cached.
    pub async fn refresh(&self) -> Result<Duration, FetchError> {
        let metadata = issuer_metadata(&self.http, &self.issuer).await?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or_else(|| FetchError::Document(self.issuer.clone(), "metadata has no jwks_uri"))?;
        let (jwks, max_age) = get_json(&self.http, jwks_uri).await?;
        let keys: HashMap<String, Arc<VerifyingKey>> = jwks["keys"]
            .as_array()
            .ok_or_else(|| FetchError::Document(jwks_uri.to_owned(), "no keys"))?
            .iter()
            .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
            .filter_map(|k| Some((k["kid"].as_str()?.to_owned(), Arc::new(VerifyingKey::from_jwk(k)?))))
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
        Ok(max_age.unwrap_or(MAX_CACHE).clamp(MIN_CACHE, MAX_CACHE))
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
            Err(Invalid::UnknownKey) if self.may_refetch() => {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "refetching the issuer's keys for an unknown kid");
                }
                self.verify_signature(token)
            }
            other => other,
        }?;
        Ok(self.verified.insert(token, claims))
    }

    fn verify_signature(&self, token: &str) -> Result<AccessClaims, Invalid> {
        let keys = self.keys.load();
        let checks = Checks { allow_expired: false, leeway: LEEWAY_SECS };
        tokens::verify_with(token, &self.issuer, checks, |kid| keys.get(kid).map(|k| &**k))
    }

    fn may_refetch(&self) -> bool {
        let Ok(mut next) = self.next_on_demand.lock() else { return false };
        let now = Instant::now();
        if now < *next {
            return false;
        }
        *next = now + UNKNOWN_KID_REFETCH;
        true
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
