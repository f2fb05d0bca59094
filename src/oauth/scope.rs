//! Scopes (RFC 6749 §3.3): space-separated tokens of printable ASCII without `"` or `\`.

/// Asking for it means a refresh token; it is accepted for every resource.
pub const OFFLINE_ACCESS: &str = "offline_access";
/// OpenID Connect (Core §3.1.2.1, §5.4): an ID token, and the profile and email claims. Accepted
/// for every resource in the authorization code flow.
pub const OPENID: &str = "openid";
pub const PROFILE: &str = "profile";
pub const EMAIL: &str = "email";
pub const OIDC_SCOPES: [&str; 3] = [OPENID, PROFILE, EMAIL];
const MAX_SCOPES: usize = 50;
const MAX_SCOPE_LEN: usize = 128;

fn valid_token(s: &str) -> bool {
    (1..=MAX_SCOPE_LEN).contains(&s.len())
        && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Parse a scope parameter into a sorted, de-duplicated list.
pub fn parse(raw: &str) -> Result<Vec<String>, String> {
    let mut scopes: Vec<String> = Vec::new();
    for token in raw.split(' ').filter(|t| !t.is_empty()) {
        if !valid_token(token) {
            return Err(format!("{:?} is not a valid scope", token.chars().take(40).collect::<String>()));
        }
        scopes.push(token.to_owned());
    }
    scopes.sort();
    scopes.dedup();
    if scopes.len() > MAX_SCOPES {
        return Err(format!("at most {MAX_SCOPES} scopes"));
    }
    Ok(scopes)
}

/// Whether one scope name is acceptable when registering a resource.
pub fn is_valid_name(name: &str) -> bool {
    valid_token(name)
}

pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Whether every scope in `wanted` is in `granted`.
pub fn is_subset(wanted: &[String], granted: &[String]) -> bool {
    wanted.iter().all(|s| granted.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sorts_and_dedups() {
        assert_eq!(parse("b a b").unwrap(), ["a", "b"]);
        assert_eq!(parse("  tools:read   tools:write ").unwrap(), ["tools:read", "tools:write"]);
        assert_eq!(parse("").unwrap(), Vec::<String>::new());
        assert!(parse("a\"b").is_err());
        assert!(parse("a\\b").is_err());
        assert!(parse("caf\u{e9}").is_err());
        assert!(parse(&"x".repeat(129)).is_err());
        let many: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
        assert!(parse(&many.join(" ")).is_err());
    }

    #[test]
    fn subsets() {
        let granted = parse("a b c").unwrap();
        assert!(is_subset(&parse("a c").unwrap(), &granted));
        assert!(is_subset(&[], &granted));
        assert!(!is_subset(&parse("a d").unwrap(), &granted));
    }
}
