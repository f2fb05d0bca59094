//! Other parties' signing keys (RFC 7517 JWK sets), fetched and cached by the URL they are
//! published at: the issuer the gateway trusts, upstream OpenID providers, and next a client's
//! `jwks_uri` (`private_key_jwt`) and ID-JAG issuers.
//!
//! The caller says how a set is fetched ([`Fetch`]): through the outbound-fetch guard with the
//! reach it allows, or with its own function (the gateway's configured issuer, which may be on
//! loopback). The way of fetching is part of the cache key, so a set fetched with a wide reach is
//! never handed to a caller with a narrower one. A set is used for its [`Lifetime`] (fixed, or
//! the answer's `Cache-Control: max-age` within bounds) and fetched again after it. A token that
//! names a `kid` the set lacks refetches it, but not within [`Rules::unknown_kid_refetch`] of the
//! set's fetch nor of the last such refetch, so forged `kid`s cannot become a stream of requests.
//! Concurrent misses for one URL wait for one fetch. The cache holds at most
//! [`Rules::max_sets`] sets (the least recently used goes first), each of at most [`MAX_KEYS`]
//! keys and of at most the fetch's byte cap (`Reach::max_bytes` for the guard).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use reqwest::header::{self, HeaderMap};
use serde_json::Value;

use super::fetch::{self, Answer, FetchError, Reach};

/// Keys in one set; a larger set is refused.
pub const MAX_KEYS: usize = 100;
/// Sets in one cache, unless its [`Rules`] say fewer.
pub const MAX_SETS: usize = 1_000;

/// A caller's own GET of a JSON document: the answer, or what went wrong.
pub type GetJson = Arc<dyn Fn(url::Url) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send>> + Send + Sync>;

/// How a key set is fetched.
#[derive(Clone)]
pub enum Fetch {
    /// Through the outbound-fetch guard: public addresses only, unless the reach opens loopback
    /// or private networks. For URLs that come from outside (a provider's discovery document, a
    /// client's metadata).
    Guarded(Reach),
    /// The caller's own way, named (the name keys the cache beside the URL).
    Own { name: &'static str, get: GetJson },
}

impl Fetch {
    /// The caller's own way of fetching, for URLs it configured itself.
    pub fn own<F, Fut>(name: &'static str, get: F) -> Self
    where
        F: Fn(url::Url) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Answer, String>> + Send + 'static,
    {
        Self::Own { name, get: Arc::new(move |url| Box::pin(get(url))) }
    }

    async fn get(&self, url: &url::Url) -> Result<Answer, JwksError> {
        match self {
            Self::Guarded(reach) => Ok(fetch::get_json(url, *reach, HeaderMap::new()).await?),
            Self::Own { get, .. } => get(url.clone()).await.map_err(JwksError::Source),
        }
    }

    fn scope(&self) -> Scope {
        match self {
            Self::Guarded(reach) => Scope::Guarded { loopback: reach.loopback, private_network: reach.private_network },
            Self::Own { name, .. } => Scope::Own(name),
        }
    }
}

/// Why no key came back.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The caller's own fetch failed.
    #[error("{0}")]
    Source(String),
    #[error("the answer is not a JWK set")]
    NotAKeySet,
    #[error("the key set has more than {MAX_KEYS} keys")]
    TooManyKeys,
    #[error("the key set has no such key")]
    UnknownKey,
}

/// How long a fetched set is used.
#[derive(Clone, Copy, Debug)]
pub enum Lifetime {
    Fixed(Duration),
    /// The answer's `Cache-Control: max-age`, within `[min, max]`; `max` when it has none.
    CacheControl {
        min: Duration,
        max: Duration,
    },
}

impl Lifetime {
    fn of(self, headers: &HeaderMap) -> Duration {
        match self {
            Self::Fixed(lifetime) => lifetime,
            Self::CacheControl { min, max } => max_age(headers).unwrap_or(max).clamp(min, max.max(min)),
        }
    }
}

/// A cache's rules.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub lifetime: Lifetime,
    /// The least time between a set's fetch, or an earlier refetch for an unknown `kid`, and a
    /// refetch for an unknown `kid`.
    pub unknown_kid_refetch: Duration,
    pub max_sets: usize,
}

/// A fetched key set.
#[derive(Debug)]
pub struct KeySet {
    jwks: JwkSet,
    lifetime: Duration,
}

impl KeySet {
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// How long the set is used before it is fetched again.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The key a token's `kid` names; without a `kid`, only a set of exactly one key is
    /// unambiguous.
    pub fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        match kid {
            Some(kid) => self.jwks.find(kid),
            None => match self.jwks.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    /// [`KeySet::find`], ready to verify with. (jsonwebtoken refuses a key of another family
    /// than the token header's algorithm when verifying.)
    pub fn decoding_key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        DecodingKey::from_jwk(self.find(kid)?).ok()
    }

    /// RFC 7517 §5: members that cannot be understood are ignored, not the whole set.
    fn parse(json: Value, lifetime: Duration) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            keys: Vec<Value>,
        }
        let raw: Raw = serde_json::from_value(json).map_err(|_| JwksError::NotAKeySet)?;
        if raw.keys.len() > MAX_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let keys = raw.keys.into_iter().filter_map(|k| serde_json::from_value(k).ok()).collect();
        Ok(Self { jwks: JwkSet { keys }, lifetime })
    }
}

/// Key sets by URL and way of fetching.
pub struct Jwks {
    rules: Rules,
    entries: Mutex<HashMap<Key, Entry>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Scope {
    Guarded { loopback: bool, private_network: bool },
    Own(&'static str),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    url: String,
    scope: Scope,
}

struct Entry {
    set: Option<Arc<KeySet>>,
    fetched_at: Instant,
    /// The last refetch for an unknown `kid`, whether it succeeded or not.
    asked_at: Option<Instant>,
    used_at: Instant,
    /// Held during a fetch: concurrent misses wait for it rather than fetch again.
    flight: Arc<tokio::sync::Mutex<()>>,
    /// Completed fetches and how the last one ended, for those that waited.
    attempts: u64,
    failed: Option<JwksError>,
}

/// What a lookup does, decided under the lock.
enum Step<T> {
    Done(T),
    Refused,
    Fetch(Arc<tokio::sync::Mutex<()>>, u64),
}

impl Jwks {
    pub fn new(rules: Rules) -> Self {
        Self { rules: Rules { max_sets: rules.max_sets.max(1), ..rules }, entries: Mutex::default() }
    }

    /// The set at `url`: the cached one while it is fresh, else fetched now.
    pub async fn key_set(&self, url: &url::Url, how: &Fetch) -> Result<Arc<KeySet>, JwksError> {
        self.lookup(url, how, Instant::now(), |set| Some(set.clone())).await
    }

    /// The key `kid` names (see [`KeySet::find`]), from a fresh set, refetched for an unknown
    /// `kid` as the rules allow.
    pub async fn key(&self, url: &url::Url, kid: Option<&str>, how: &Fetch) -> Result<Jwk, JwksError> {
        self.lookup(url, how, Instant::now(), |set| set.find(kid).cloned()).await
    }

    /// [`Jwks::key`], ready to verify with.
    pub async fn decoding_key(&self, url: &url::Url, kid: Option<&str>, how: &Fetch) -> Result<DecodingKey, JwksError> {
        self.lookup(url, how, Instant::now(), |set| set.decoding_key(kid)).await
    }

    /// Fetch the set now, whatever the cache holds (a background refresh). A failure leaves the
    /// cached set in place.
    pub async fn refresh(&self, url: &url::Url, how: &Fetch) -> Result<Arc<KeySet>, JwksError> {
        let key = Key { url: url.to_string(), scope: how.scope() };
        let now = Instant::now();
        let (flight, seen) = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = self.entry(&mut entries, &key, now);
            (entry.flight.clone(), entry.attempts)
        };
        self.fetch_once(&key, url, how, now, flight, seen).await
    }

    /// A token names a key the caller's copy of the set lacks: fetch the set again, unless the
    /// rules say it is too soon (`None`), whatever the set's age. For a caller that keeps the
    /// keys in a form of its own (the gateway).
    pub async fn refetch_for_unknown_kid(&self, url: &url::Url, how: &Fetch) -> Result<Option<Arc<KeySet>>, JwksError> {
        self.refetch_for_unknown_kid_at(url, how, Instant::now()).await
    }

    async fn refetch_for_unknown_kid_at(
        &self,
        url: &url::Url,
        how: &Fetch,
        now: Instant,
    ) -> Result<Option<Arc<KeySet>>, JwksError> {
        let key = Key { url: url.to_string(), scope: how.scope() };
        let (flight, seen) = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let interval = self.rules.unknown_kid_refetch;
            let entry = self.entry(&mut entries, &key, now);
            if !entry.may_refetch(now, interval) {
                return Ok(None);
            }
            entry.asked_at = Some(now);
            (entry.flight.clone(), entry.attempts)
        };
        self.fetch_once(&key, url, how, now, flight, seen).await.map(Some)
    }

    /// A fresh set from which `pick` finds what it wants; a missing or stale set is fetched, and
    /// a fresh one in which `pick` finds nothing is refetched as the rules allow.
    async fn lookup<T>(
        &self,
        url: &url::Url,
        how: &Fetch,
        now: Instant,
        pick: impl Fn(&Arc<KeySet>) -> Option<T>,
    ) -> Result<T, JwksError> {
        let key = Key { url: url.to_string(), scope: how.scope() };
        let step = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let rules = self.rules;
            let entry = self.entry(&mut entries, &key, now);
            match &entry.set {
                Some(set) if now < entry.fetched_at + set.lifetime => match pick(set) {
                    Some(found) => Step::Done(found),
                    None if entry.may_refetch(now, rules.unknown_kid_refetch) => {
                        entry.asked_at = Some(now);
                        Step::Fetch(entry.flight.clone(), entry.attempts)
                    }
                    None => Step::Refused,
                },
                _ => Step::Fetch(entry.flight.clone(), entry.attempts),
            }
        };
        match step {
            Step::Done(found) => Ok(found),
            Step::Refused => Err(JwksError::UnknownKey),
            Step::Fetch(flight, seen) => {
                let set = self.fetch_once(&key, url, how, now, flight, seen).await?;
                pick(&set).ok_or(JwksError::UnknownKey)
            }
        }
    }

    /// Fetch unless a fetch that ended while this one waited its turn already answered.
    async fn fetch_once(
        &self,
        key: &Key,
        url: &url::Url,
        how: &Fetch,
        now: Instant,
        flight: Arc<tokio::sync::Mutex<()>>,
        seen: u64,
    ) -> Result<Arc<KeySet>, JwksError> {
        let _turn = flight.lock().await;
        {
            let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = entries.get(key).filter(|e| e.attempts != seen) {
                match (&entry.failed, &entry.set) {
                    (Some(e), _) => return Err(e.clone()),
                    (None, Some(set)) => return Ok(set.clone()),
                    (None, None) => {}
                }
            }
        }
        let started = Instant::now();
        let fetched = match how.get(url).await {
            Ok(answer) => KeySet::parse(answer.json, self.rules.lifetime.of(&answer.headers)).map(Arc::new),
            Err(e) => Err(e),
        };
        let arrived = now + started.elapsed();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = self.entry(&mut entries, key, arrived);
        entry.attempts += 1;
        match &fetched {
            Ok(set) => {
                entry.set = Some(set.clone());
                entry.fetched_at = arrived;
                entry.failed = None;
            }
            Err(e) => entry.failed = Some(e.clone()),
        }
        fetched
    }

    /// The entry for `key`, made room for if it is new.
    fn entry<'a>(&self, entries: &'a mut HashMap<Key, Entry>, key: &Key, now: Instant) -> &'a mut Entry {
        if !entries.contains_key(key)
            && entries.len() >= self.rules.max_sets
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used_at).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
            set: None,
            fetched_at: now,
            asked_at: None,
            used_at: now,
            flight: Arc::default(),
            attempts: 0,
            failed: None,
        });
        entry.used_at = entry.used_at.max(now);
        entry
    }
}

impl Entry {
    fn may_refetch(&self, now: Instant, interval: Duration) -> bool {
        let since_fetch = self.set.is_none() || now >= self.fetched_at + interval;
        since_fetch && self.asked_at.is_none_or(|asked| now >= asked + interval)
    }
}

/// `Cache-Control: max-age`, if the answer has one.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok()).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);
    /// A set arrives a little after the lookup that fetched it.
    const SLACK: Duration = Duration::from_secs(1);

    /// A JWKS endpoint: the set it serves, its `Cache-Control`, and how often it was asked.
    #[derive(Default)]
    struct Stub {
        kids: Mutex<Vec<&'static str>>,
        cache_control: Mutex<Option<&'static str>>,
        fail: Mutex<bool>,
        delay: Mutex<Duration>,
        calls: AtomicUsize,
    }

    impl Stub {
        fn new(kids: &[&'static str]) -> Arc<Self> {
            let stub = Arc::new(Self::default());
            stub.serve(kids);
            stub
        }

        fn serve(&self, kids: &[&'static str]) {
            *self.kids.lock().unwrap() = kids.to_vec();
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fetch(self: &Arc<Self>) -> Fetch {
            let stub = self.clone();
            Fetch::own("stub", move |_url| {
                let stub = stub.clone();
                async move {
                    stub.calls.fetch_add(1, Ordering::SeqCst);
                    let delay = *stub.delay.lock().unwrap();
                    tokio::time::sleep(delay).await;
                    if *stub.fail.lock().unwrap() {
                        return Err("HTTP 503".to_owned());
                    }
                    let keys: Vec<Value> = stub.kids.lock().unwrap().iter().map(|kid| ec_key(kid)).collect();
                    let mut headers = HeaderMap::new();
                    if let Some(cc) = *stub.cache_control.lock().unwrap() {
                        headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
                    }
                    Ok(Answer { json: json!({ "keys": keys }), headers })
                }
            })
        }
    }

    fn ec_key(kid: &str) -> Value {
        // The P-256 generator point: a valid public key.
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
        })
    }

    fn rules() -> Rules {
        Rules { lifetime: Lifetime::Fixed(HOUR), unknown_kid_refetch: MINUTE, max_sets: MAX_SETS }
    }

    /// Loopback, so the guard refuses it before any network traffic.
    fn url(n: u32) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1/{n}/jwks")).unwrap()
    }

    async fn kid_at(jwks: &Jwks, stub: &Arc<Stub>, kid: &str, now: Instant) -> Result<String, JwksError> {
        let jwk = jwks.lookup(&url(1), &stub.fetch(), now, |set| set.find(Some(kid)).cloned()).await?;
        Ok(jwk.common.key_id.unwrap())
    }

    #[tokio::test]
    async fn a_fresh_set_is_served_from_the_cache() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let key = jwks.decoding_key(&url(1), Some("k1"), &stub.fetch()).await;
        assert!(key.is_ok());
        assert!(jwks.key(&url(1), Some("k1"), &stub.fetch()).await.is_ok());
        assert!(jwks.key_set(&url(1), &stub.fetch()).await.is_ok());
        assert_eq!(stub.calls(), 1);
    }

    #[tokio::test]
    async fn a_stale_set_is_fetched_again() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let t0 = Instant::now();
        kid_at(&jwks, &stub, "k1", t0).await.unwrap();
        kid_at(&jwks, &stub, "k1", t0 + HOUR - Duration::from_secs(1)).await.unwrap();
        assert_eq!(stub.calls(), 1);
        stub.serve(&["k2"]);
        assert_eq!(kid_at(&jwks, &stub, "k1", t0 + HOUR + SLACK).await, Err(JwksError::UnknownKey));
        assert_eq!(stub.calls(), 2);
        assert_eq!(kid_at(&jwks, &stub, "k2", t0 + HOUR + SLACK).await.unwrap(), "k2");
        assert_eq!(stub.calls(), 2);
    }

    #[tokio::test]
    async fn a_stale_set_that_cannot_be_fetched_is_not_served() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let t0 = Instant::now();
        kid_at(&jwks, &stub, "k1", t0).await.unwrap();
        *stub.fail.lock().unwrap() = true;
        assert_eq!(kid_at(&jwks, &stub, "k1", t0 + HOUR + SLACK).await, Err(JwksError::Source("HTTP 503".into())));
        *stub.fail.lock().unwrap() = false;
        assert!(kid_at(&jwks, &stub, "k1", t0 + HOUR + SLACK).await.is_ok(), "the next lookup tries again");
        assert_eq!(stub.calls(), 3);
    }

    #[tokio::test]
    async fn an_unknown_kid_refetches_at_most_once_per_interval() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let t0 = Instant::now();
        kid_at(&jwks, &stub, "k1", t0).await.unwrap();
        stub.serve(&["k1", "k2"]);
        // Just fetched: a new kid does not refetch yet.
        assert_eq!(kid_at(&jwks, &stub, "k2", t0 + Duration::from_secs(59)).await, Err(JwksError::UnknownKey));
        assert_eq!(stub.calls(), 1);
        assert_eq!(kid_at(&jwks, &stub, "k2", t0 + MINUTE + SLACK).await.unwrap(), "k2");
        assert_eq!(stub.calls(), 2);
        // A forged kid: one refetch, then none for a minute, however many tokens name it.
        let t1 = t0 + 3 * MINUTE;
        for i in 0..5 {
            assert_eq!(kid_at(&jwks, &stub, "forged", t1 + Duration::from_secs(i)).await, Err(JwksError::UnknownKey));
        }
        assert_eq!(stub.calls(), 3);
        assert!(kid_at(&jwks, &stub, "forged", t1 + MINUTE + SLACK).await.is_err());
        assert_eq!(stub.calls(), 4);
        // Known keys are still served meanwhile.
        assert!(kid_at(&jwks, &stub, "k1", t1 + MINUTE + SLACK).await.is_ok());
        assert_eq!(stub.calls(), 4);
    }

    #[tokio::test]
    async fn a_failed_refetch_for_an_unknown_kid_also_waits_its_turn() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let t0 = Instant::now();
        kid_at(&jwks, &stub, "k1", t0).await.unwrap();
        *stub.fail.lock().unwrap() = true;
        assert!(matches!(kid_at(&jwks, &stub, "k2", t0 + MINUTE + SLACK).await, Err(JwksError::Source(_))));
        assert_eq!(kid_at(&jwks, &stub, "k2", t0 + MINUTE * 3 / 2).await, Err(JwksError::UnknownKey));
        assert_eq!(stub.calls(), 2);
        assert_eq!(kid_at(&jwks, &stub, "k1", t0 + MINUTE * 3 / 2).await.unwrap(), "k1", "the set stays");
    }

    #[tokio::test]
    async fn refetches_for_a_caller_that_keeps_its_own_copy_follow_the_same_rule() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        let t0 = Instant::now();
        assert_eq!(jwks.refresh(&url(1), &stub.fetch()).await.unwrap().jwks().keys.len(), 1);
        let (how, url) = (stub.fetch(), url(1));
        let refetch = |at| jwks.refetch_for_unknown_kid_at(&url, &how, at);
        assert!(refetch(t0 + Duration::from_secs(1)).await.unwrap().is_none());
        stub.serve(&["k1", "k2"]);
        let set = refetch(t0 + MINUTE + SLACK).await.unwrap().unwrap();
        assert!(set.find(Some("k2")).is_some());
        assert!(refetch(t0 + MINUTE * 3 / 2).await.unwrap().is_none());
        // A background refresh is never refused, and leaves the set in place when it fails.
        *stub.fail.lock().unwrap() = true;
        assert!(jwks.refresh(&url, &how).await.is_err());
        assert_eq!(stub.calls(), 3);
        assert_eq!(kid_at(&jwks, &stub, "k2", t0 + MINUTE * 3 / 2).await.unwrap(), "k2");
    }

    #[tokio::test]
    async fn the_cache_holds_at_most_max_sets_dropping_the_least_recently_used() {
        let jwks = Jwks::new(Rules { max_sets: 2, ..rules() });
        let (stub, urls) = (Stub::new(&["k1"]), [url(1), url(2), url(3)]);
        let how = stub.fetch();
        let get = |n: usize| jwks.key(&urls[n - 1], Some("k1"), &how);
        get(1).await.unwrap();
        get(2).await.unwrap();
        get(1).await.unwrap();
        get(3).await.unwrap();
        assert_eq!(jwks.entries.lock().unwrap().len(), 2);
        assert_eq!(stub.calls(), 3);
        get(1).await.unwrap();
        assert_eq!(stub.calls(), 3, "1 was used last and stayed");
        get(2).await.unwrap();
        assert_eq!(stub.calls(), 4, "2 was dropped");
    }

    #[tokio::test]
    async fn concurrent_misses_for_one_url_share_one_fetch() {
        let (jwks, stub) = (Jwks::new(rules()), Stub::new(&["k1"]));
        *stub.delay.lock().unwrap() = Duration::from_millis(50);
        let (how, url) = (stub.fetch(), url(1));
        let lookups = (0..10).map(|_| jwks.key(&url, Some("k1"), &how));
        let found = futures_util::future::join_all(lookups).await;
        assert!(found.iter().all(Result::is_ok));
        assert_eq!(stub.calls(), 1);
        // A failure is shared too.
        *stub.fail.lock().unwrap() = true;
        let refreshes = (0..5).map(|_| jwks.refresh(&url, &how));
        let failed = futures_util::future::join_all(refreshes).await;
        assert!(failed.iter().all(Result::is_err));
        assert_eq!(stub.calls(), 2);
    }

    #[tokio::test]
    async fn sets_fetched_another_way_are_kept_apart() {
        let jwks = Jwks::new(rules());
        let stub = Stub::new(&["k1"]);
        jwks.key(&url(1), Some("k1"), &stub.fetch()).await.unwrap();
        let reach = Reach { loopback: false, private_network: false, timeout: MINUTE, max_bytes: 1024 };
        let guarded = jwks.key(&url(1), Some("k1"), &Fetch::Guarded(reach)).await;
        assert_eq!(guarded.err(), Some(JwksError::Fetch(FetchError::ForbiddenAddress)), "not the stub's set");
    }

    #[test]
    fn lifetime_from_cache_control_within_bounds() {
        let rule = Lifetime::CacheControl { min: MINUTE, max: HOUR };
        let with = |cc: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
            rule.of(&headers)
        };
        assert_eq!(rule.of(&HeaderMap::new()), HOUR);
        assert_eq!(with("public, max-age=600"), Duration::from_secs(600));
        assert_eq!(with("max-age=5"), MINUTE);
        assert_eq!(with("max-age=86400, must-revalidate"), HOUR);
        assert_eq!(with("no-cache"), HOUR);
        assert_eq!(Lifetime::Fixed(HOUR).of(&HeaderMap::new()), HOUR);
    }

    #[test]
    fn sets_are_read_leniently_but_bounded() {
        let set = KeySet::parse(json!({"keys": [ec_key("a"), {"kty": "AKP", "kid": "b"}, 5, {"use": 7}]}), HOUR);
        let set = set.unwrap();
        assert_eq!(set.jwks().keys.len(), 2, "an unknown key type is kept, malformed members are not");
        assert!(set.decoding_key(Some("a")).is_some());
        assert!(set.decoding_key(Some("b")).is_none());
        assert_eq!(KeySet::parse(json!({"keys": {}}), HOUR).err(), Some(JwksError::NotAKeySet));
        assert_eq!(KeySet::parse(json!([]), HOUR).err(), Some(JwksError::NotAKeySet));
        let many: Vec<Value> = (0..=MAX_KEYS).map(|i| ec_key(&i.to_string())).collect();
        assert_eq!(KeySet::parse(json!({ "keys": many }), HOUR).err(), Some(JwksError::TooManyKeys));
    }

    #[test]
    fn without_a_kid_only_a_single_key_is_unambiguous() {
        let one = KeySet::parse(json!({"keys": [ec_key("a")]}), HOUR).unwrap();
        assert!(one.find(None).is_some());
        let two = KeySet::parse(json!({"keys": [ec_key("a"), ec_key("b")]}), HOUR).unwrap();
        assert!(two.find(None).is_none());
        assert!(two.find(Some("b")).is_some());
        assert!(two.find(Some("c")).is_none());
    }
}
