//! An OpenID Connect provider upstream (OpenID Connect Core 1.0 §3.1, Discovery 1.0): its
//! discovery document (whose `issuer` must equal the configured one), the code exchange, and the
//! ID token validated against its JWKS: signature by an allowlisted asymmetric algorithm, `iss`,
//! `aud` (and `azp` when there are several audiences), `exp`, `iat` and `nonce`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use subtle::ConstantTimeEq as _;

use super::{Failure, Identity};

/// Asymmetric algorithms only: never `none` or an HMAC keyed with the client secret.
const ALLOWED_ALGS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;

/// What discovery says about the provider.
#[derive(Clone, Debug)]
pub struct Provider {
    pub issuer: String,
    pub authorization_endpoint: url::Url,
    pub token_endpoint: url::Url,
    pub jwks_uri: url::Url,
    pub userinfo_endpoint: Option<url::Url>,
    /// `client_secret_post` only if the provider does not take `client_secret_basic`.
    pub secret_in_body: bool,
    pub algs: Vec<Algorithm>,
}

/// Read a discovery document fetched for `issuer`. Endpoints must be https unless `http_ok`.
pub fn provider(issuer: &str, doc: &Value, http_ok: bool) -> Result<Provider, Failure> {
    let bad = |what: &str| Failure::Discovery(format!("its discovery document {what}"));
    if doc["issuer"].as_str() != Some(issuer) {
        return Err(bad("names another issuer"));
    }
    let endpoint = |name: &str| -> Result<Option<url::Url>, Failure> {
        let Some(raw) = doc.get(name).and_then(Value::as_str) else { return Ok(None) };
        let url = url::Url::parse(raw).map_err(|_| bad(&format!("has an invalid {name}")))?;
        if url.scheme() != "https" && !(http_ok && url.scheme() == "http") {
            return Err(bad(&format!("has a {name} that is not https")));
        }
        Ok(Some(url))
    };
    let required = |name: &str| endpoint(name)?.ok_or_else(|| bad(&format!("has no {name}")));
    let methods: Vec<&str> = doc["token_endpoint_auth_methods_supported"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let algs: Vec<Algorithm> = doc["id_token_signing_alg_values_supported"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).filter(|a| ALLOWED_ALGS.contains(a)).collect())
        .unwrap_or_else(|| vec![Algorithm::RS256]);
    if algs.is_empty() {
        return Err(bad("offers no ID token signing algorithm Tessera accepts"));
    }
    Ok(Provider {
        issuer: issuer.to_owned(),
        authorization_endpoint: required("authorization_endpoint")?,
        token_endpoint: required("token_endpoint")?,
        jwks_uri: required("jwks_uri")?,
        userinfo_endpoint: endpoint("userinfo_endpoint")?,
        secret_in_body: !methods.is_empty()
            && !methods.contains(&"client_secret_basic")
            && methods.contains(&"client_secret_post"),
        algs,
    })
}

/// The `kid` and algorithm an ID token's header names (checked against the allowlist).
pub fn header(id_token: &str, provider: &Provider) -> Result<(Option<String>, Algorithm), Failure> {
    let header = jsonwebtoken::decode_header(id_token).map_err(|_| Failure::IdToken("is not a JWT".into()))?;
    if !provider.algs.contains(&header.alg) {
        return Err(Failure::IdToken(format!("is signed with {:?}, which is not allowed", header.alg)));
    }
    Ok((header.kid, header.alg))
}

/// The identity in a verified ID token: signature, `iss`, `aud`/`azp`, `exp`, `iat`, `nonce`.
pub fn verify_id_token(
    id_token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    provider: &Provider,
    client_id: &str,
    nonce: &str,
) -> Result<Identity, Failure> {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&provider.issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    let claims = jsonwebtoken::decode::<Value>(id_token, key, &validation)
        .map_err(|e| Failure::IdToken(format!("failed validation ({:?})", e.kind())))?
        .claims;
    // Several audiences: the token must say it was issued to us (Core §3.1.3.7 step 5).
    if claims["aud"].as_array().is_some_and(|a| a.len() > 1) && claims["azp"].as_str() != Some(client_id) {
        return Err(Failure::IdToken("has several audiences and another authorized party".into()));
    }
    let presented = claims["nonce"].as_str().unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(Failure::IdToken("carries another nonce (a replayed or injected token)".into()));
    }
    identity(&claims)
}

/// The identity in ID token or userinfo claims.
pub fn identity(claims: &Value) -> Result<Identity, Failure> {
    let subject = claims["sub"].as_str().filter(|s| !s.is_empty() && s.len() <= 255);
    let text =
        |name: &str, max: usize| claims[name].as_str().filter(|s| !s.is_empty() && s.len() <= max).map(str::to_owned);
    Ok(Identity {
        subject: subject.ok_or_else(|| Failure::IdToken("has no usable sub".into()))?.to_owned(),
        email: text("email", 254).filter(|e| e.contains('@')),
        // Some providers send the string "true".
        email_verified: matches!(&claims["email_verified"], Value::Bool(true)) || claims["email_verified"] == "true",
        name: text("name", 200),
        preferred_username: text("preferred_username", 64),
        groups: claims["groups"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).take(1000).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// Fill what the ID token left out (email, name, groups) from userinfo, whose `sub` must match.
pub fn merge_userinfo(id: &mut Identity, userinfo: &Value) -> Result<(), Failure> {
    let more = identity(userinfo).map_err(|_| Failure::IdToken("userinfo has no sub".into()))?;
    if more.subject != id.subject {
        return Err(Failure::IdToken("userinfo names another subject".into()));
    }
    if id.email.is_none() {
        id.email = more.email;
        id.email_verified = more.email_verified;
    }
    id.name = id.name.take().or(more.name);
    id.preferred_username = id.preferred_username.take().or(more.preferred_username);
    if id.groups.is_empty() {
        id.groups = more.groups;
    }
    Ok(())
}

/// How long a discovery document or key set is kept.
pub const CACHE: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn discovery_rules() {
        let doc = json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/auth",
            "token_endpoint": "https://idp.example/token",
            "jwks_uri": "https://idp.example/jwks",
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
        });
        let p = provider("https://idp.example", &doc, false).unwrap();
        assert!(p.secret_in_body);
        assert_eq!(p.algs, vec![Algorithm::RS256], "HS256 and none are never accepted");
        assert!(provider("https://other.example", &doc, false).is_err(), "issuer mismatch");
        assert!(provider("https://idp.example/", &doc, false).is_err(), "exact string comparison");
        let mut http = doc.clone();
        http["token_endpoint"] = json!("http://idp.example/token");
        assert!(provider("https://idp.example", &http, false).is_err());
        assert!(provider("https://idp.example", &http, true).is_ok());
        let mut symmetric = doc.clone();
        symmetric["id_token_signing_alg_values_supported"] = json!(["HS256"]);
        assert!(provider("https://idp.example", &symmetric, false).is_err());
        let mut missing = doc;
        missing.as_object_mut().unwrap().remove("jwks_uri");
        assert!(provider("https://idp.example", &missing, false).is_err());
    }

    #[test]
    fn identity_claims() {
        let id = identity(&json!({"sub": "123", "email": "a@b.example", "email_verified": "true", "groups": ["g", 5]}))
            .unwrap();
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["g"]);
        assert!(identity(&json!({"sub": ""})).is_err());
        assert!(identity(&json!({"email": "a@b"})).is_err());
        let mut partial = identity(&json!({"sub": "123"})).unwrap();
        merge_userinfo(&mut partial, &json!({"sub": "123", "email": "a@b.example", "email_verified": true})).unwrap();
        assert_eq!(partial.verified_email(), Some("a@b.example"));
        assert!(merge_userinfo(&mut partial, &json!({"sub": "456"})).is_err());
    }
}
