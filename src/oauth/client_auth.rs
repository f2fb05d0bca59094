//! Client authentication at the token, revocation and introspection endpoints (RFC 6749 §2.3):
//! `client_secret_basic`, `client_secret_post`, or `none` (public clients name themselves).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::OAuthError;
use super::params::Params;
use super::secret;

/// The credentials a request presented, before they are checked against a client.
#[derive(PartialEq, Eq)]
pub enum Presented {
    Basic {
        client_id: String,
        secret: String,
    },
    Post {
        client_id: String,
        secret: String,
    },
    /// A public client: `client_id` only.
    PublicId {
        client_id: String,
    },
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, id) = match self {
            Self::Basic { client_id, .. } => ("basic", client_id),
            Self::Post { client_id, .. } => ("post", client_id),
            Self::PublicId { client_id } => ("none", client_id),
        };
        write!(f, "Presented({kind}, {id:?})")
    }
}

impl Presented {
    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. } | Self::Post { client_id, .. } | Self::PublicId { client_id } => client_id,
        }
    }

    /// Extract credentials from the `Authorization` header and the form body.
    pub fn from_request(authorization: Option<&str>, params: &Params) -> Result<Self, OAuthError> {
        let body_id = params.get("client_id");
        let body_secret = params.get("client_secret");
        if let Some(header) = authorization {
            let (client_id, secret) = parse_basic(header)?;
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not Basic and client_secret",
                ));
            }
            if body_id.is_some_and(|id| id != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the client authenticated with Basic",
                ));
            }
            return Ok(Self::Basic { client_id, secret });
        }
        match (body_id, body_secret) {
            (Some(id), Some(secret)) => Ok(Self::Post { client_id: id.to_owned(), secret: secret.to_owned() }),
            (Some(id), None) => Ok(Self::PublicId { client_id: id.to_owned() }),
            (None, Some(_)) => Err(OAuthError::invalid_request("client_secret without client_id")),
            (None, None) => Err(OAuthError::invalid_client("client authentication is required")),
        }
    }

    /// Check these credentials against a client's registered authentication. Confidential
    /// clients may use either secret method; public clients must not present a secret.
    pub fn verify(&self, secret_hash: Option<&[u8]>) -> Result<(), OAuthError> {
        match (self, secret_hash) {
            (Self::PublicId { .. }, None) => Ok(()),
            (Self::PublicId { .. }, Some(_)) => {
                Err(OAuthError::invalid_client("this client must authenticate with its secret"))
            }
            (Self::Basic { secret, .. } | Self::Post { secret, .. }, Some(hash)) if secret::verify(secret, hash) => {
                Ok(())
            }
            (Self::Basic { .. } | Self::Post { .. }, Some(_)) => {
                Err(OAuthError::invalid_client("client authentication failed"))
            }
            (Self::Basic { .. } | Self::Post { .. }, None) => {
                Err(OAuthError::invalid_client("this client has no secret"))
            }
        }
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed Basic credentials");
    let (scheme, value) = header.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client("unsupported authorization scheme; use Basic"));
    }
    let decoded = STANDARD.decode(value.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let id = form_decode(id).ok_or_else(malformed)?;
    let secret = form_decode(secret).ok_or_else(malformed)?;
    if id.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

fn form_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = s.bytes().map(|b| if b == b'+' { b' ' } else { b }).collect();
    percent_encoding::percent_decode(&bytes).decode_utf8().ok().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_is_url_decoded() {
        let p = Params::parse(b"").unwrap();
        let got = Presented::from_request(Some(&basic("my%20app", "s%3Ac+t")), &p).unwrap();
        assert_eq!(got, Presented::Basic { client_id: "my app".into(), secret: "s:c t".into() });
    }

    #[test]
    fn body_client_id_alongside_basic() {
        let same = Params::parse(b"client_id=abc").unwrap();
        assert!(Presented::from_request(Some(&basic("abc", "s")), &same).is_ok());
        let other = Params::parse(b"client_id=xyz").unwrap();
        assert!(Presented::from_request(Some(&basic("abc", "s")), &other).is_err());
        let both = Params::parse(b"client_secret=s").unwrap();
        assert!(Presented::from_request(Some(&basic("abc", "s")), &both).is_err());
    }

    #[test]
    fn methods() {
        let post = Params::parse(b"client_id=a&client_secret=b").unwrap();
        assert!(matches!(Presented::from_request(None, &post).unwrap(), Presented::Post { .. }));
        let public = Params::parse(b"client_id=a").unwrap();
        assert!(matches!(Presented::from_request(None, &public).unwrap(), Presented::PublicId { .. }));
        let none = Params::parse(b"").unwrap();
        assert_eq!(Presented::from_request(None, &none).unwrap_err().code, super::super::ErrorCode::InvalidClient);
        assert!(Presented::from_request(Some("Bearer x"), &none).is_err());
        assert!(Presented::from_request(Some("Basic !!!"), &none).is_err());
        assert!(Presented::from_request(Some(&format!("Basic {}", STANDARD.encode("nocolon"))), &none).is_err());
    }

    #[test]
    fn verification() {
        let hash = secret::digest("s3cret");
        let ok = Presented::Post { client_id: "a".into(), secret: "s3cret".into() };
        assert!(ok.verify(Some(&hash)).is_ok());
        let bad = Presented::Basic { client_id: "a".into(), secret: "wrong".into() };
        assert!(bad.verify(Some(&hash)).is_err());
        let public = Presented::PublicId { client_id: "a".into() };
        assert!(public.verify(None).is_ok());
        assert!(public.verify(Some(&hash)).is_err());
        assert!(ok.verify(None).is_err());
    }
}
