//! Redirect URIs: what may be registered, and how a presented URI matches a registered one.
//!
//! Matching is byte-exact on the raw strings (no normalization, so `%2e%2e`, case changes or a
//! trailing slash never match), with one exception from RFC 8252 §7.3: a loopback redirect URI
//! (`http://127.0.0.1`, `http://[::1]`, `http://localhost`) matches on any port, because native
//! apps listen on an ephemeral port.

/// What kind of redirect URI was registered, which decides the application type it suits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://...` — web applications.
    Https,
    /// `http://127.0.0.1|[::1]|localhost[:port]/...` — native apps.
    Loopback,
    /// `com.example.app:/callback`, `cursor://...` — native apps (RFC 8252 §7.1).
    PrivateUse,
}

const MAX_LEN: usize = 2000;
const FORBIDDEN_SCHEMES: &[&str] = &["javascript", "data", "vbscript", "file", "about", "blob", "filesystem"];

/// Validate a redirect URI for registration; the message names what is wrong.
pub fn validate(raw: &str) -> Result<RedirectKind, String> {
    if raw.is_empty() || raw.len() > MAX_LEN {
        return Err(format!("must be 1 to {MAX_LEN} characters"));
    }
    if raw.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'\\') {
        return Err("must not contain spaces, backslashes or control characters".into());
    }
    let scheme_end = raw.find(':').ok_or("must be an absolute URI with a scheme")?;
    let scheme = raw[..scheme_end].to_ascii_lowercase();
    if FORBIDDEN_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!("the {scheme}: scheme is not allowed"));
    }
    if raw.contains('#') {
        return Err("must not contain a fragment".into());
    }
    if raw.contains('*') {
        return Err("must not contain wildcards".into());
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URI".to_owned())?;
    if !url.username().is_empty() || url.password().is_some() || authority(raw).is_some_and(|a| a.contains('@')) {
        return Err("must not contain user information".into());
    }
    match url.scheme() {
        "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("must name a host".into());
            }
            Ok(RedirectKind::Https)
        }
        "http" => {
            if loopback_parts(raw).is_some() {
                Ok(RedirectKind::Loopback)
            } else {
                Err("http is allowed only on a loopback host (127.0.0.1, [::1] or localhost); use https".into())
            }
        }
        scheme => {
            let valid = scheme.starts_with(|c: char| c.is_ascii_lowercase())
                && scheme.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
            if !valid || matches!(scheme, "ws" | "wss" | "ftp") {
                return Err(format!("the {scheme}: scheme is not allowed"));
            }
            Ok(RedirectKind::PrivateUse)
        }
    }
}

/// The authority of a `scheme://authority/...` URI, as written.
fn authority(raw: &str) -> Option<&str> {
    let rest = &raw[raw.find("://")? + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `localhost`, or an IPv4 or IPv6 loopback address.
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// `(host, rest)` of a loopback `http` URI as written, where rest is everything after the port.
fn loopback_parts(raw: &str) -> Option<(&str, &str)> {
    let rest = raw.strip_prefix("http://")?;
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    if authority.contains('@') {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        (&authority[..=close], &authority[close + 1..])
    } else {
        match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    if !matches!(host, "127.0.0.1" | "[::1]" | "localhost") {
        return None;
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some((host, tail))
}

/// Whether a presented redirect URI matches a registered one.
pub fn matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    match (loopback_parts(registered), loopback_parts(presented)) {
        (Some((rh, rt)), Some((ph, pt))) => rh == ph && rt == pt,
        _ => false,
    }
}

/// Whether every redirect URI is on this machine (the consent page warns about such clients).
pub fn all_loopback(uris: &[String]) -> bool {
    !uris.is_empty() && uris.iter().all(|u| loopback_parts(u).is_some())
}

/// The host shown on the consent page (`com.example.app:` for private-use schemes).
pub fn display_host(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => format!("{}:", url.scheme()),
        },
        Err(_) => uri.chars().take(80).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        assert_eq!(validate("https://app.example.com/cb").unwrap(), RedirectKind::Https);
        assert_eq!(validate("http://127.0.0.1:8080/callback").unwrap(), RedirectKind::Loopback);
        assert_eq!(validate("http://localhost/callback").unwrap(), RedirectKind::Loopback);
        assert_eq!(validate("http://[::1]:3000/cb").unwrap(), RedirectKind::Loopback);
        assert_eq!(validate("com.example.app:/oauth2redirect").unwrap(), RedirectKind::PrivateUse);
        assert_eq!(validate("cursor://anysphere.cursor-retrieval/oauth/callback").unwrap(), RedirectKind::PrivateUse);
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "JAVASCRIPT://x/%0aalert(1)",
            "data:text/html,hi",
            "DaTa:text/html,hi",
            "vbscript:msgbox",
            "VBScript:x",
            "file:///etc/passwd",
            "FILE:///etc/passwd",
            "https://app.example.com/cb#frag",
            "https://*.example.com/cb",
            "https://app.example.com/*",
            "/relative/cb",
            "cb",
            "https://user:pw@app.example.com/cb",
            "https://user@app.example.com/cb",
            "http://app.example.com/cb",
            "http://127.0.0.1.evil.com/cb",
            "http://localhost.evil.com/cb",
            "http://127.0.0.1@evil.com/cb",
            "https://app.example.com/c b",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn exact_match_with_near_misses() {
        let reg = "https://app.example.com/callback";
        assert!(matches(reg, reg));
        for near in [
            "https://app.example.com/callback/",
            "https://APP.example.com/callback",
            "https://app.example.com/Callback",
            "https://app.example.com/callback/extra",
            "https://app.example.com/callback?x=1",
            "https://app.example.com/callback/%2e%2e/evil",
            "https://app.example.com/%2e%2e/callback",
            "https://app.example.com@evil.com/callback",
            "https://app.example.com.evil.com/callback",
            "https://app-example.com/callback",
            "https://app.example.co/callback",
            "http://app.example.com/callback",
            "https://app.example.com:443/callback",
            "https://app.example.com/callback#x",
        ] {
            assert!(!matches(reg, near), "{near} must not match");
        }
    }

    #[test]
    fn loopback_matches_any_port_only() {
        let reg = "http://127.0.0.1/callback";
        assert!(matches(reg, "http://127.0.0.1:53412/callback"));
        assert!(matches("http://127.0.0.1:1234/callback", "http://127.0.0.1:9/callback"));
        assert!(matches("http://[::1]/cb", "http://[::1]:8000/cb"));
        assert!(matches("http://localhost:3000/cb", "http://localhost:4000/cb"));
        for near in [
            "http://127.0.0.1:53412/callback/",
            "http://127.0.0.1:53412/callbac",
            "http://localhost:53412/callback",
            "http://127.0.0.1:53412@evil.com/callback",
            "http://127.0.0.1:abc/callback",
            "http://127.0.0.1:/callback",
            "http://127.0.0.2:5000/callback",
            "https://127.0.0.1:5000/callback",
            "http://127.0.0.1:5000/callback?x",
        ] {
            assert!(!matches(reg, near), "{near} must not match");
        }
    }

    #[test]
    fn display() {
        assert_eq!(display_host("https://app.example.com/cb"), "app.example.com");
        assert_eq!(display_host("com.example.app:/cb"), "com.example.app:");
        assert!(all_loopback(&["http://127.0.0.1/cb".into(), "http://localhost:3/x".into()]));
        assert!(!all_loopback(&["http://127.0.0.1/cb".into(), "https://a.example/x".into()]));
    }
}
