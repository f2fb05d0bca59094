//! `application/x-www-form-urlencoded` parameters (query strings and form bodies), parsed
//! strictly: RFC 6749 §3.1 forbids repeating a parameter, and a value that is not UTF-8 after
//! percent-decoding is refused rather than silently mangled.

use std::collections::HashMap;

/// Most parameters one request may carry.
pub const MAX_PARAMS: usize = 64;
/// Longest value of one parameter, in bytes after decoding.
pub const MAX_VALUE: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub enum ParamError {
    /// Not valid percent-encoding or not UTF-8.
    Malformed,
    TooMany,
    TooLong(String),
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed => f.write_str("the parameters are not valid UTF-8 form encoding"),
            Self::TooMany => write!(f, "too many parameters (at most {MAX_PARAMS})"),
            Self::TooLong(name) => write!(f, "parameter {name} is too long (at most {MAX_VALUE} bytes)"),
        }
    }
}

/// Parsed parameters. Repeated names are recorded rather than rejected outright, because an
/// authorization request must tell a repeated `client_id` (error page) from a repeated `scope`
/// (error redirect).
#[derive(Debug, Default)]
pub struct Params {
    values: HashMap<String, String>,
    repeated: Vec<String>,
}

fn decode(raw: &[u8]) -> Result<String, ParamError> {
    let plus_as_space: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    // Refuse a '%' not followed by two hex digits instead of passing it through.
    let mut i = 0;
    while i < plus_as_space.len() {
        if plus_as_space[i] == b'%' {
            let ok = plus_as_space.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && plus_as_space.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(ParamError::Malformed);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).map_err(|_| ParamError::Malformed)
}

impl Params {
    pub fn parse(input: &[u8]) -> Result<Self, ParamError> {
        let mut params = Self::default();
        let mut count = 0;
        for pair in input.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_PARAMS {
                return Err(ParamError::TooMany);
            }
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name = decode(name)?;
            let value = decode(value)?;
            // NUL has no place in any OAuth parameter (and PostgreSQL text cannot hold it).
            if name.contains('\0') || value.contains('\0') {
                return Err(ParamError::Malformed);
            }
            if value.len() > MAX_VALUE || name.len() > 256 {
                return Err(ParamError::TooLong(name.chars().take(64).collect()));
            }
            if params.values.contains_key(&name) {
                if !params.repeated.contains(&name) {
                    params.repeated.push(name);
                }
                continue;
            }
            params.values.insert(name, value);
        }
        Ok(params)
    }

    /// A parameter's value; a parameter sent without a value counts as omitted (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn is_repeated(&self, name: &str) -> bool {
        self.repeated.iter().any(|n| n == name)
    }

    /// The names that start with `prefix` (with a value), without it: the checkboxes of a form
    /// named `prefix` + what each stands for.
    pub fn names_after<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values.iter().filter(|(_, v)| !v.is_empty()).filter_map(move |(k, _)| k.strip_prefix(prefix))
    }

    /// The first repeated parameter, if any.
    pub fn first_repeated(&self) -> Option<&str> {
        self.repeated.first().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let p = Params::parse(b"a=1&b=hello+world&c=%2Fx%3Fy&d=&e").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("hello world"));
        assert_eq!(p.get("c"), Some("/x?y"));
        assert_eq!(p.get("d"), None);
        assert_eq!(p.get("e"), None);
        assert_eq!(p.first_repeated(), None);
    }

    #[test]
    fn repeated_parameters_are_recorded() {
        let p = Params::parse(b"scope=a&client_id=x&scope=b").unwrap();
        assert!(p.is_repeated("scope"));
        assert!(!p.is_repeated("client_id"));
        assert_eq!(p.first_repeated(), Some("scope"));
        assert_eq!(p.get("scope"), Some("a"));
    }

    #[test]
    fn hostile_input_is_refused() {
        assert_eq!(Params::parse(b"a=%ff%fe").unwrap_err(), ParamError::Malformed);
        assert_eq!(Params::parse(b"a=%zz").unwrap_err(), ParamError::Malformed);
        assert_eq!(Params::parse(b"a=%").unwrap_err(), ParamError::Malformed);
        let many: Vec<u8> = (0..100).flat_map(|i| format!("p{i}=1&").into_bytes()).collect();
        assert_eq!(Params::parse(&many).unwrap_err(), ParamError::TooMany);
        let long = format!("a={}", "x".repeat(MAX_VALUE + 1));
        assert!(matches!(Params::parse(long.as_bytes()), Err(ParamError::TooLong(_))));
        assert_eq!(Params::parse(b"a=%00").unwrap_err(), ParamError::Malformed);
        assert_eq!(Params::parse(b"a%00=1").unwrap_err(), ParamError::Malformed);
    }
}
