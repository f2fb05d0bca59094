//! Outgoing HTTP requests that a hostile URL cannot turn against the network: the host is
//! resolved once and every address must be allowed (public, or what the caller opts into); the
//! connection goes only to the address that passed (reqwest `resolve`, so TLS still verifies the
//! host name and a second DNS answer cannot differ); no redirects, no proxy; only JSON bodies,
//! read chunk by chunk up to a cap; one total timeout. Client metadata documents and upstream
//! identity providers are fetched through here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::header::{self, HeaderMap};
use serde_json::Value;

use super::ssrf::{is_private_network, is_special_use};

/// Which addresses beyond the public ones a fetch may reach, and its limits.
#[derive(Clone, Copy, Debug)]
pub struct Reach {
    /// Loopback addresses (tests).
    pub loopback: bool,
    /// Loopback and private networks (an operator's own identity provider).
    pub private_network: bool,
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Reach {
    fn allows(&self, ip: IpAddr) -> bool {
        !is_special_use(ip) || (self.loopback && ip.is_loopback()) || (self.private_network && is_private_network(ip))
    }
}

/// Why a fetch failed. Messages say what went wrong without the remote's details.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("the URL has no host or port")]
    Url,
    #[error("the host could not be resolved")]
    Resolve,
    #[error("the host resolves to an address that may not be fetched")]
    ForbiddenAddress,
    #[error("the request failed")]
    Fetch,
    #[error("the answer was HTTP {0}")]
    Status(u16, Option<Value>),
    #[error("the answer is not JSON (Content-Type)")]
    NotJson,
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no answer within {0} seconds")]
    Timeout(u64),
    #[error("the answer is not valid JSON")]
    Invalid,
}

/// A JSON answer with its headers.
pub struct Answer {
    pub json: Value,
    pub headers: HeaderMap,
}

/// `GET url` with `Accept: application/json` (plus `headers`), for a `200` JSON answer.
pub async fn get_json(url: &url::Url, reach: Reach, headers: HeaderMap) -> Result<Answer, FetchError> {
    let fetch = async {
        let client = client_for(url, reach).await?;
        let req = client.get(url.clone()).headers(headers).header(header::ACCEPT, "application/json");
        read_json(req.send().await.map_err(|_| FetchError::Fetch)?, reach).await
    };
    tokio::time::timeout(reach.timeout, fetch).await.map_err(|_| FetchError::Timeout(reach.timeout.as_secs()))?
}

/// `POST url` with a form body (plus `headers`), for a `200` JSON answer. A JSON error body
/// (`{"error": ...}`) comes back in [`FetchError::Status`].
pub async fn post_form(
    url: &url::Url,
    reach: Reach,
    headers: HeaderMap,
    form: &[(&str, &str)],
) -> Result<Answer, FetchError> {
    let fetch = async {
        let client = client_for(url, reach).await?;
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let req = client
            .post(url.clone())
            .headers(headers)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        read_json(req.send().await.map_err(|_| FetchError::Fetch)?, reach).await
    };
    tokio::time::timeout(reach.timeout, fetch).await.map_err(|_| FetchError::Timeout(reach.timeout.as_secs()))?
}

/// A client that connects only to the checked address of `url`'s host.
async fn client_for(url: &url::Url, reach: Reach) -> Result<reqwest::Client, FetchError> {
    let port = url.port_or_known_default().ok_or(FetchError::Url)?;
    let addr = resolve_address(url, port, reach).await?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(reach.timeout)
        .user_agent(concat!("Tessera/", env!("CARGO_PKG_VERSION")));
    if let Some(url::Host::Domain(domain)) = url.host() {
        builder = builder.resolve(domain, addr);
    }
    builder.build().map_err(|_| FetchError::Fetch)
}

/// The `200` JSON body, read up to the cap; another status carries its JSON body if it had one.
async fn read_json(mut res: reqwest::Response, reach: Reach) -> Result<Answer, FetchError> {
    let status = res.status();
    let content_type = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence == "application/json" || essence.ends_with("+json");
    if status != reqwest::StatusCode::OK && !is_json {
        return Err(FetchError::Status(status.as_u16(), None));
    }
    if !is_json {
        return Err(FetchError::NotJson);
    }
    if res.content_length().is_some_and(|n| n > reach.max_bytes as u64) {
        return Err(FetchError::TooLarge(reach.max_bytes));
    }
    let headers = res.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|_| FetchError::Fetch)? {
        if body.len() + chunk.len() > reach.max_bytes {
            return Err(FetchError::TooLarge(reach.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Status(status.as_u16(), json));
    }
    Ok(Answer { json: json.ok_or(FetchError::Invalid)?, headers })
}

/// Resolve once; every address must be allowed, and the first is the one connected to.
async fn resolve_address(url: &url::Url, port: u16, reach: Reach) -> Result<SocketAddr, FetchError> {
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(domain)) => {
            tokio::net::lookup_host((domain, port)).await.map_err(|_| FetchError::Resolve)?.collect()
        }
        None => return Err(FetchError::Url),
    };
    match addrs.first() {
        None => Err(FetchError::Resolve),
        Some(_) if !addrs.iter().all(|a| reach.allows(a.ip())) => Err(FetchError::ForbiddenAddress),
        Some(first) => Ok(*first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(loopback: bool, private_network: bool) -> Reach {
        Reach { loopback, private_network, timeout: Duration::from_secs(1), max_bytes: 10 }
    }

    #[test]
    fn reach_decides_on_special_use_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(reach(false, false).allows(ip("93.184.216.34")));
        assert!(!reach(false, false).allows(ip("127.0.0.1")));
        assert!(reach(true, false).allows(ip("127.0.0.1")));
        assert!(!reach(true, false).allows(ip("10.0.0.1")));
        assert!(reach(false, true).allows(ip("10.0.0.1")));
        assert!(!reach(false, true).allows(ip("169.254.169.254")), "cloud metadata never");
    }

    #[tokio::test]
    async fn forbidden_addresses_are_refused_before_connecting() {
        let url = url::Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        let err = get_json(&url, reach(true, true), HeaderMap::new()).await.err();
        assert_eq!(err, Some(FetchError::ForbiddenAddress));
    }
}
