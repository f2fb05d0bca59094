//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): an `https` URL
//! used as `client_id` names a JSON document that describes the client.
//!
//! The URL is checked before any network traffic, then fetched through `platform::fetch` (every
//! address the host resolves to must be public; no redirects; only a `200` JSON body of at most
//! 5 KiB; one total timeout). Fetches are limited per host and de-duplicated while one is in
//! flight. A valid document is cached as a `clients` row (origin `cimd`) for as long as its
//! `Cache-Control`/`Expires` say, within 5 minutes and 24 hours; a failure is never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::oauth::registration::{self, Source};
use crate::platform::audit::{AuditSink, Event, Outcome};
use crate::platform::fetch::{self, FetchError, Reach};
use crate::platform::rate_limit::Limiter;
use crate::store::clients::{self, Client};

pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
const MAX_URL_LEN: usize = 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MIN_CACHE: Duration = Duration::from_secs(300);
const MAX_CACHE: Duration = Duration::from_secs(86400);
/// Used when the document says nothing about caching.
const DEFAULT_CACHE: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, Default)]
pub struct CimdSettings {
    /// Test-only: allow `http` and loopback addresses (any port).
    pub allow_loopback: bool,
    /// Ports other than 443 that document URLs may use.
    pub allowed_ports: Vec<u16>,
    pub fetches_per_minute: u32,
}

/// Why a metadata document cannot be used. Messages say what was wrong without upstream detail.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CimdError {
    #[error("the client_id URL {0}")]
    Url(&'static str),
    #[error("too many metadata document fetches for this host; try again later")]
    RateLimited,
    #[error("the host of the client_id URL could not be resolved")]
    Resolve,
    #[error("the host of the client_id URL resolves to an address that may not be fetched")]
    ForbiddenAddress,
    #[error("the metadata document could not be fetched")]
    Fetch,
    #[error("the metadata document request answered HTTP {0}, not 200")]
    Status(u16),
    #[error("the metadata document is not JSON (Content-Type)")]
    NotJson,
    #[error("the metadata document is larger than 5 KiB")]
    TooLarge,
    #[error("the metadata document did not arrive within 5 seconds")]
    Timeout,
    #[error("the metadata document is invalid: {0}")]
    Invalid(String),
    #[error("the metadata document could not be stored")]
    Database,
}

/// Whether a `client_id` is a metadata document URL (rather than an issued id).
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Check a document URL without fetching it.
pub fn check_url(raw: &str, settings: &CimdSettings) -> Result<url::Url, CimdError> {
    if raw.len() > MAX_URL_LEN {
        return Err(CimdError::Url("is too long"));
    }
    if raw.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'\\') {
        return Err(CimdError::Url("contains spaces, backslashes or control characters"));
    }
    if raw.contains('#') {
        return Err(CimdError::Url("must not contain a fragment"));
    }
    // Dot segments, raw or percent-encoded, before the URL parser normalizes them away.
    let path_and_query = raw.splitn(4, '/').nth(3).unwrap_or("");
    let path = path_and_query.split('?').next().unwrap_or("");
    for segment in path.split('/') {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded == "." || decoded == ".." {
            return Err(CimdError::Url("must not contain . or .. path segments"));
        }
    }
    let url = url::Url::parse(raw).map_err(|_| CimdError::Url("is not a valid URL"))?;
    let loopback_http = settings.allow_loopback && url.scheme() == "http";
    if url.scheme() != "https" && !loopback_http {
        return Err(CimdError::Url("must use https"));
    }
    if !url.username().is_empty() || url.password().is_some() || authority_has_at(raw) {
        return Err(CimdError::Url("must not contain user information"));
    }
    let Some(host) = url.host() else { return Err(CimdError::Url("must name a host")) };
    let is_loopback = crate::oauth::redirect_uri::is_loopback_host(&host);
    if loopback_http && !is_loopback {
        return Err(CimdError::Url("must use https"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(CimdError::Url("must have a path"));
    }
    if let Some(port) = url.port()
        && !settings.allowed_ports.contains(&port)
        && !(settings.allow_loopback && is_loopback)
    {
        return Err(CimdError::Url("must use the default port"));
    }
    Ok(url)
}

fn authority_has_at(raw: &str) -> bool {
    let rest = raw.split_once("://").map_or("", |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].contains('@')
}

/// Validate a document fetched for the `client_id` URL as presented (compared byte for byte with
/// the document's own `client_id`); returns the client it describes.
pub fn validate_document(url: &str, doc: &Value) -> Result<Client, CimdError> {
    let invalid = |m: String| CimdError::Invalid(m);
    let obj = doc.as_object().ok_or_else(|| invalid("not a JSON object".into()))?;
    match obj.get("client_id") {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(_)) => {
            return Err(invalid("its client_id does not equal the URL it was fetched from".into()));
        }
        _ => return Err(invalid("client_id is missing".into())),
    }
    let m = registration::parse(doc, Source::Document).map_err(|e| invalid(e.description.into_owned()))?;
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default();
    let mut client = Client::new(url.to_owned(), m.client_name.unwrap_or(host), "cimd");
    client.redirect_uris = m.redirect_uris;
    // A document client may refresh unless it says otherwise.
    client.grant_types = if obj.contains_key("grant_types") {
        m.grant_types
    } else {
        vec!["authorization_code".into(), "refresh_token".into()]
    };
    client.metadata = Value::Object(m.stored);
    Ok(client)
}

/// How long a response may be cached: `Cache-Control: max-age` (or `no-store`/`no-cache`:
/// the minimum), else `Expires`, else a default; always within 5 minutes and 24 hours.
pub fn cache_ttl(headers: &reqwest::header::HeaderMap) -> Duration {
    let cache_control = headers.get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ttl = None;
    for directive in cache_control.split(',').map(|d| d.trim().to_ascii_lowercase()) {
        if directive == "no-store" || directive == "no-cache" {
            ttl = Some(Duration::ZERO);
            break;
        }
        if let Some(secs) = directive.strip_prefix("max-age=").and_then(|v| v.trim_matches('"').parse::<u64>().ok()) {
            ttl = Some(Duration::from_secs(secs));
        }
    }
    let ttl = ttl.or_else(|| {
        let expires = headers.get(reqwest::header::EXPIRES)?.to_str().ok()?;
        let at = chrono::DateTime::parse_from_rfc2822(expires).ok()?;
        Some((at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    });
    ttl.unwrap_or(DEFAULT_CACHE).clamp(MIN_CACHE, MAX_CACHE)
}

/// The outcome of one fetch, shared by every request that waited for it.
type InFlight = Arc<OnceCell<Result<Client, CimdError>>>;

/// Resolves and fetches documents, with a per-host limit and one fetch per URL at a time.
pub struct Fetcher {
    settings: CimdSettings,
    per_host: Limiter<String>,
    in_flight: Mutex<HashMap<String, InFlight>>,
}

impl Fetcher {
    pub fn new(settings: CimdSettings) -> Self {
        let per_host = Limiter::new(settings.fetches_per_minute, Duration::from_secs(60));
        Self { settings, per_host, in_flight: Mutex::new(HashMap::new()) }
    }

    pub fn prune(&self) {
        self.per_host.prune();
    }

    /// The client a document URL describes: the cached row while fresh, else a new fetch.
    pub async fn resolve(&self, pool: &sqlx::PgPool, audit: &AuditSink, client_id: &str) -> Result<Client, CimdError> {
        let url = check_url(client_id, &self.settings)?;
        if let Ok(Some(row)) = clients::get(pool, client_id).await
            && row.origin == "cimd"
            && row.document_expires_at.is_some_and(|t| t > Utc::now())
        {
            return Ok(row);
        }
        let cell = {
            let mut in_flight = self.in_flight.lock().map_err(|_| CimdError::Fetch)?;
            in_flight.entry(client_id.to_owned()).or_default().clone()
        };
        let result = cell.get_or_init(|| self.fetch_and_store(pool, audit, client_id, &url)).await.clone();
        if let Ok(mut in_flight) = self.in_flight.lock()
            && in_flight.get(client_id).is_some_and(|c| Arc::ptr_eq(c, &cell))
        {
            in_flight.remove(client_id);
        }
        result
    }

    /// Fetch `url` (the parsed form of `client_id`, as presented) and store the client under
    /// `client_id` exactly: the draft compares the two as plain strings, so no normalization of
    /// the URL may make a document that names itself differently acceptable.
    async fn fetch_and_store(
        &self,
        pool: &sqlx::PgPool,
        audit: &AuditSink,
        client_id: &str,
        url: &url::Url,
    ) -> Result<Client, CimdError> {
        let result = async {
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            self.per_host.check(&host).map_err(|_| CimdError::RateLimited)?;
            let (doc, ttl) = self.fetch(url).await?;
            let mut client = validate_document(client_id, &doc)?;
            client.document_expires_at =
                Some(Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(5)));
            clients::upsert_document_client(pool, &client).await.map_err(|e| {
                tracing::error!(error = %e, "storing a metadata document client");
                CimdError::Database
            })
        }
        .await;
        if let Err(e) = &result {
            audit.record(Event::new("cimd.fetch_failed", Outcome::Error).client(client_id).detail(e.to_string())).await;
        }
        result
    }

    async fn fetch(&self, url: &url::Url) -> Result<(Value, Duration), CimdError> {
        let reach = Reach {
            loopback: self.settings.allow_loopback,
            private_network: false,
            timeout: FETCH_TIMEOUT,
            max_bytes: MAX_DOCUMENT_BYTES,
        };
        let answer = fetch::get_json(url, reach, reqwest::header::HeaderMap::new()).await.map_err(|e| match e {
            FetchError::Url => CimdError::Url("has no port"),
            FetchError::Resolve => CimdError::Resolve,
            FetchError::ForbiddenAddress => CimdError::ForbiddenAddress,
            FetchError::Fetch => CimdError::Fetch,
            FetchError::Status(status, _) => CimdError::Status(status),
            FetchError::NotJson => CimdError::NotJson,
            FetchError::TooLarge(_) => CimdError::TooLarge,
            FetchError::Timeout(_) => CimdError::Timeout,
            FetchError::Invalid => CimdError::Invalid("not valid JSON".into()),
        })?;
        Ok((answer.json, cache_ttl(&answer.headers)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strict() -> CimdSettings {
        CimdSettings { allow_loopback: false, allowed_ports: vec![], fetches_per_minute: 10 }
    }

    #[test]
    fn url_rules() {
        let s = strict();
        assert!(check_url("https://app.example.com/oauth/client.json", &s).is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "ftp://app.example.com/client.json",
            "https://app.example.com",
            "https://app.example.com/",
            "https://user@app.example.com/client.json",
            "https://user:pw@app.example.com/client.json",
            "https://app.example.com/client.json#frag",
            "https://app.example.com/a/../client.json",
            "https://app.example.com/./client.json",
            "https://app.example.com/a/%2e%2e/client.json",
            "https://app.example.com/a/%2E%2e/client.json",
            "https://app.example.com/%2e/client.json",
            "https://app.example.com:8443/client.json",
            "http://127.0.0.1:8080/client.json",
            "https://app.example.com/c lient.json",
        ] {
            assert!(check_url(bad, &s).is_err(), "{bad} must be refused");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(1100));
        assert!(check_url(&long, &s).is_err());
        let ported = CimdSettings { allowed_ports: vec![8443], ..strict() };
        assert!(check_url("https://app.example.com:8443/client.json", &ported).is_ok());
        let test = CimdSettings { allow_loopback: true, ..strict() };
        assert!(check_url("http://127.0.0.1:8080/client.json", &test).is_ok());
        assert!(check_url("http://app.example.com/client.json", &test).is_err(), "http only on loopback");
    }

    #[test]
    fn document_rules() {
        let url = "https://app.example.com/client.json";
        let ok = json!({"client_id": url, "client_name": "App", "redirect_uris": ["http://127.0.0.1/cb"]});
        let client = validate_document(url, &ok).unwrap();
        assert_eq!(client.origin, "cimd");
        assert_eq!(client.token_endpoint_auth_method, "none");
        assert!(client.has_grant("refresh_token"));
        assert!(validate_document("https://app.example.com/other.json", &ok).is_err(), "client_id mismatch");
        // Simple string comparison: no URL normalization on either side.
        for (presented, named) in [
            (url, "https://app.example.com/client.json/"),
            (url, "https://app.example.com:443/client.json"),
            ("https://app.example.com:443/client.json", url),
            (url, "https://APP.example.com/client.json"),
            ("https://App.Example.com/client.json", url),
            (url, "https://app.example.com/%63lient.json"),
            ("https://app.example.com/%63lient.json", url),
            (url, "HTTPS://app.example.com/client.json"),
        ] {
            let mut doc = ok.clone();
            doc["client_id"] = json!(named);
            assert!(validate_document(presented, &doc).is_err(), "{presented} vs {named}");
        }
        assert!(validate_document(url, &json!({"client_id": url})).is_err(), "no redirect_uris");
        assert!(validate_document(url, &json!({"client_id": url, "redirect_uris": ["javascript:x"]})).is_err());
        let mut secret = ok.clone();
        secret["client_secret"] = json!("s");
        assert!(validate_document(url, &secret).is_err());
        let mut basic = ok.clone();
        basic["token_endpoint_auth_method"] = json!("client_secret_basic");
        assert!(validate_document(url, &basic).is_err());
        assert_eq!(
            validate_document(url, &json!({"client_id": url, "redirect_uris": ["https://a.example/cb"]}))
                .unwrap()
                .client_name,
            "app.example.com"
        );
    }

    #[test]
    fn cache_bounds() {
        let h = |k: reqwest::header::HeaderName, v: &str| {
            let mut m = reqwest::header::HeaderMap::new();
            m.insert(k, v.parse().unwrap());
            m
        };
        use reqwest::header::{CACHE_CONTROL, EXPIRES};
        assert_eq!(cache_ttl(&h(CACHE_CONTROL, "public, max-age=3600")), Duration::from_secs(3600));
        assert_eq!(cache_ttl(&h(CACHE_CONTROL, "max-age=10")), MIN_CACHE);
        assert_eq!(cache_ttl(&h(CACHE_CONTROL, "max-age=9999999")), MAX_CACHE);
        assert_eq!(cache_ttl(&h(CACHE_CONTROL, "no-store")), MIN_CACHE);
        assert_eq!(cache_ttl(&reqwest::header::HeaderMap::new()), DEFAULT_CACHE);
        let in_two_hours = (Utc::now() + chrono::Duration::hours(2)).to_rfc2822();
        let ttl = cache_ttl(&h(EXPIRES, &in_two_hours));
        assert!(ttl > Duration::from_secs(7000) && ttl <= Duration::from_secs(7200), "{ttl:?}");
    }
}
