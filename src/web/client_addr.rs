//! The source address of a request: the socket peer, or — only when the peer is a configured
//! trusted proxy — the address that proxy reports in `Forwarded` or `X-Forwarded-For`
//! (the right-most address that is not itself a trusted proxy).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The socket peer of a connection: the `ConnectInfo` of every request on it.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(addr) = parts.extensions.get::<ClientAddr>() {
            return Ok(*addr);
        }
        Ok(ClientAddr(peer(&parts.extensions)))
    }
}

pub fn peer(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<Peer>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(Peer(a))| canonical(a.ip()))
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address behind trusted proxies.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("forwarded").iter().filter_map(|v| v.to_str().ok()) {
        for element in value.split(',') {
            for pair in element.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k.trim().eq_ignore_ascii_case("for")
                    && let Some(ip) = parse_node(v.trim().trim_matches('"'))
                {
                    chain.push(ip);
                }
            }
        }
    }
    if chain.is_empty() {
        for value in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
            chain.extend(value.split(',').filter_map(|s| parse_node(s.trim())));
        }
    }
    // Walk back from the nearest hop; the first address that is not a trusted proxy is the client.
    chain.iter().rev().copied().map(canonical).find(|ip| !trusted.iter().any(|net| net.contains(ip))).unwrap_or(peer)
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443` or `2001:db8::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.split(']').next()).and_then(|ip| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        let stranger: IpAddr = "198.51.100.9".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.5")]);
        assert_eq!(resolve(proxy, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(stranger, &h, &trusted), stranger, "untrusted peers cannot claim an address");
        // A client-supplied leftmost entry does not win over the address the proxy saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(resolve(proxy, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        let h = headers(&[("forwarded", "for=\"[2001:db8::7]:443\";proto=https, for=10.0.0.9")]);
        assert_eq!(resolve(proxy, &h, &trusted), "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(proxy, &HeaderMap::new(), &trusted), proxy);
        let h = headers(&[("x-forwarded-for", "garbage")]);
        assert_eq!(resolve(proxy, &h, &trusted), proxy);
    }
}
