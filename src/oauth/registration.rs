//! Client metadata (RFC 7591 §2) as sent to `/register` or published in a client ID metadata
//! document: typed, bounded and validated. Unknown members are ignored (and never stored); a
//! wrong type or value is an `invalid_redirect_uri` / `invalid_client_metadata` error that names
//! the field.
//!
//! Lenient where RFC 7591 §3.2.1 lets the server replace what a client asks for, strict where
//! security needs it: grant and response types Tessera does not support are dropped (refused only
//! when nothing usable remains); a metadata document asking for an authentication method Tessera
//! does not offer documents (`private_key_jwt`, ...) gets `none`, but never one that needs a
//! shared secret; a registration's confidential method is never downgraded.

use serde_json::{Map, Value};

use super::redirect_uri::{self, RedirectKind};
use super::{ErrorCode, OAuthError, scope};

pub const MAX_REDIRECT_URIS: usize = 10;
const MAX_NAME: usize = 200;
const MAX_URI: usize = 2000;
const MAX_SHORT: usize = 200;
const MAX_CONTACTS: usize = 10;
/// The longest `default_max_age` accepted: ten years, in seconds.
const MAX_DEFAULT_MAX_AGE: u64 = 10 * 365 * 24 * 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `POST/PUT /register`.
    Registration,
    /// A client ID metadata document: public clients only.
    Document,
}

/// Validated metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    /// `native` or `web` (inferred from the redirect URIs when absent).
    pub application_type: String,
    /// Kept as sent: client_uri, logo_uri, tos_uri, policy_uri, contacts, scope, software_id,
    /// software_version, application_type, response_types, and the OpenID Connect members
    /// post_logout_redirect_uris, id_token_signed_response_alg, default_max_age, require_auth_time.
    pub stored: Map<String, Value>,
    /// What was asked for and replaced (RFC 7591 §3.2.1), for the audit record: dropped grant
    /// and response types, a replaced authentication method.
    pub replaced: Vec<String>,
}

/// The grant types a self-registered or metadata-document client may use.
const SUPPORTED_GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

fn invalid(field: &str, what: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, format!("{field}: {what}"))
}

fn bad_redirect(what: impl std::fmt::Display) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRedirectUri, format!("redirect_uris: {what}"))
}

/// A string member, bounded, with no control characters.
fn string<'a>(doc: &'a Map<String, Value>, field: &str, max: usize) -> Result<Option<&'a str>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(invalid(field, format!("must be at most {max} characters")));
            }
            if s.chars().any(char::is_control) {
                return Err(invalid(field, "must not contain control characters"));
            }
            Ok(Some(s))
        }
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn string_array(
    doc: &Map<String, Value>,
    field: &str,
    max_items: usize,
    max_len: usize,
) -> Result<Option<Vec<String>>, OAuthError> {
    match doc.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            if items.len() > max_items {
                return Err(invalid(field, format!("at most {max_items} entries")));
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) if s.chars().count() <= max_len && !s.chars().any(char::is_control) => {
                        Ok(s.clone())
                    }
                    Value::String(_) => Err(invalid(field, format!("entries must be at most {max_len} characters"))),
                    _ => Err(invalid(field, "must be an array of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        }
        Some(_) => Err(invalid(field, "must be an array of strings")),
    }
}

/// An informational URL (client_uri, logo_uri, ...): absolute https (or http on loopback).
fn web_url(doc: &Map<String, Value>, field: &str) -> Result<Option<String>, OAuthError> {
    let Some(raw) = string(doc, field, MAX_URI)? else { return Ok(None) };
    let url = url::Url::parse(raw).map_err(|_| invalid(field, "must be an absolute URL"))?;
    let loopback = url.host().as_ref().is_some_and(super::redirect_uri::is_loopback_host);
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        return Err(invalid(field, "must be an https URL"));
    }
    Ok(Some(raw.to_owned()))
}

/// Parse and validate client metadata.
pub fn parse(doc: &Value, source: Source) -> Result<Metadata, OAuthError> {
    let Value::Object(doc) = doc else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let (redirect_uris, kinds) = redirect_uris(doc)?;
    let application_type = application_type(doc, &kinds)?;
    let mut replaced = Vec::new();
    let token_endpoint_auth_method = auth_method(doc, source, &mut replaced)?;
    let grant_types = grant_types(doc, &mut replaced)?;
    let response_types = response_types(doc, &mut replaced)?;
    let client_name = string(doc, "client_name", MAX_NAME)?.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let stored = stored_fields(doc, &application_type, &response_types)?;
    Ok(Metadata {
        redirect_uris,
        client_name,
        token_endpoint_auth_method,
        grant_types,
        response_types,
        application_type,
        stored,
        replaced,
    })
}

/// `redirect_uris`: required, 1..=10, each valid; duplicates dropped. With each one's kind.
fn redirect_uris(doc: &Map<String, Value>) -> Result<(Vec<String>, Vec<RedirectKind>), OAuthError> {
    let items = match doc.get("redirect_uris") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(bad_redirect("at least one redirect URI is required"));
        }
        Some(_) => return Err(bad_redirect("must be an array of strings")),
    };
    if items.len() > MAX_REDIRECT_URIS {
        return Err(bad_redirect(format!("at most {MAX_REDIRECT_URIS} redirect URIs")));
    }
    let mut uris = Vec::new();
    let mut kinds = Vec::new();
    for item in items {
        let Value::String(uri) = item else { return Err(bad_redirect("must be an array of strings")) };
        let kind = redirect_uri::validate(uri).map_err(|m| bad_redirect(format!("{}: {m}", truncate(uri))))?;
        if !uris.contains(uri) {
            uris.push(uri.clone());
            kinds.push(kind);
        }
    }
    Ok((uris, kinds))
}

/// `application_type`: native or web; inferred when absent (many MCP clients omit it). A web
/// application must use https redirect URIs.
fn application_type(doc: &Map<String, Value>, kinds: &[RedirectKind]) -> Result<String, OAuthError> {
    let application_type = match string(doc, "application_type", 10)? {
        Some(t @ ("native" | "web")) => t.to_owned(),
        Some(_) => return Err(invalid("application_type", "must be native or web")),
        None if kinds.iter().all(|k| *k == RedirectKind::Https) => "web".to_owned(),
        None => "native".to_owned(),
    };
    if application_type == "web" && kinds.iter().any(|k| *k != RedirectKind::Https) {
        return Err(bad_redirect("a web application must use https redirect URIs"));
    }
    Ok(application_type)
}

/// `token_endpoint_auth_method`: a registration may ask for a secret (and keeps it, whatever
/// its redirect URIs); a document is public.
fn auth_method(doc: &Map<String, Value>, source: Source, replaced: &mut Vec<String>) -> Result<String, OAuthError> {
    if source == Source::Registration {
        return match string(doc, "token_endpoint_auth_method", 40)? {
            None | Some("none") => Ok("none".to_owned()),
            Some(m @ ("client_secret_basic" | "client_secret_post")) => Ok(m.to_owned()),
            Some(other) => Err(invalid(
                "token_endpoint_auth_method",
                format!("{other} is not supported (none, client_secret_basic, client_secret_post)"),
            )),
        };
    }
    if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
        return Err(invalid("client_secret", "a metadata document must not contain a secret"));
    }
    // The method as a string or a list, and the (non-standard) plural some clients publish.
    let mut asked = Vec::new();
    for field in ["token_endpoint_auth_method", "token_endpoint_auth_methods_supported"] {
        match doc.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) => asked.push(m.as_str()),
            Some(Value::Array(list)) => asked.extend(list.iter().filter_map(Value::as_str)),
            Some(_) => return Err(invalid(field, "must be a string or an array of strings")),
        }
    }
    let needs_a_secret = |m: &&str| m.starts_with("client_secret_");
    if !asked.is_empty() && !asked.contains(&"none") && asked.iter().all(needs_a_secret) {
        return Err(invalid("token_endpoint_auth_method", "a metadata document client must be public (none)"));
    }
    if let Some(other) = asked.iter().find(|m| **m != "none") {
        replaced.push(format!("token_endpoint_auth_method {other} (none)"));
    }
    Ok("none".to_owned())
}

/// `grant_types`: those Tessera supports for such clients (RFC 7591 default: authorization_code);
/// others are dropped, and a list with no authorization_code left is refused.
fn grant_types(doc: &Map<String, Value>, replaced: &mut Vec<String>) -> Result<Vec<String>, OAuthError> {
    let Some(asked) = string_array(doc, "grant_types", 10, 100)? else {
        return Ok(vec!["authorization_code".to_owned()]);
    };
    let (mut kept, dropped): (Vec<String>, Vec<String>) =
        asked.into_iter().partition(|g| SUPPORTED_GRANT_TYPES.contains(&g.as_str()));
    if !kept.iter().any(|g| g == "authorization_code") {
        let supported = SUPPORTED_GRANT_TYPES.join(", ");
        return Err(invalid("grant_types", format!("must include authorization_code (supported: {supported})")));
    }
    replaced.extend(dropped.into_iter().map(|g| format!("grant_type {g}")));
    kept.sort();
    kept.dedup();
    Ok(kept)
}

/// `response_types`: `code` (the default); others are dropped, and a list without `code` is refused.
fn response_types(doc: &Map<String, Value>, replaced: &mut Vec<String>) -> Result<Vec<String>, OAuthError> {
    let Some(asked) = string_array(doc, "response_types", 5, 40)? else { return Ok(vec!["code".to_owned()]) };
    if !asked.iter().any(|r| r == "code") {
        return Err(invalid("response_types", "only code is supported"));
    }
    replaced.extend(asked.into_iter().filter(|r| r != "code").map(|r| format!("response_type {r}")));
    Ok(vec!["code".to_owned()])
}

/// The informational members kept as sent (validated), plus the effective application and
/// response types.
fn stored_fields(
    doc: &Map<String, Value>,
    application_type: &str,
    response_types: &[String],
) -> Result<Map<String, Value>, OAuthError> {
    let mut stored = Map::new();
    stored.insert("application_type".into(), Value::String(application_type.to_owned()));
    stored.insert("response_types".into(), serde_json::json!(response_types));
    for field in ["client_uri", "logo_uri", "tos_uri", "policy_uri"] {
        if let Some(url) = web_url(doc, field)? {
            stored.insert(field.into(), Value::String(url));
        }
    }
    if let Some(contacts) = string_array(doc, "contacts", MAX_CONTACTS, 254)? {
        stored.insert("contacts".into(), serde_json::json!(contacts));
    }
    // An empty scope (MCP Inspector sends "" when nothing is advertised) is no scope.
    if let Some(raw) = string(doc, "scope", 2000)?.filter(|s| !s.trim().is_empty()) {
        let scopes = scope::parse(raw).map_err(|m| invalid("scope", m))?;
        stored.insert("scope".into(), Value::String(scope::join(&scopes)));
    }
    for field in ["software_id", "software_version"] {
        if let Some(v) = string(doc, field, MAX_SHORT)? {
            stored.insert(field.into(), Value::String(v.to_owned()));
        }
    }
    openid_fields(doc, &mut stored)?;
    Ok(stored)
}

/// The OpenID Connect registration members Tessera honours (OpenID Connect Dynamic Client
/// Registration 1.0 §2); `subject_type` may only be `public`.
fn openid_fields(doc: &Map<String, Value>, stored: &mut Map<String, Value>) -> Result<(), OAuthError> {
    const LOGOUT_URIS: &str = "post_logout_redirect_uris";
    if let Some(uris) = string_array(doc, LOGOUT_URIS, MAX_REDIRECT_URIS, MAX_URI)? {
        for uri in &uris {
            redirect_uri::validate(uri).map_err(|m| invalid(LOGOUT_URIS, format!("{}: {m}", truncate(uri))))?;
        }
        stored.insert(LOGOUT_URIS.into(), serde_json::json!(uris));
    }
    match string(doc, "id_token_signed_response_alg", 10)? {
        None => {}
        Some(alg @ ("RS256" | "ES256")) => {
            stored.insert("id_token_signed_response_alg".into(), Value::String(alg.to_owned()));
        }
        Some(_) => return Err(invalid("id_token_signed_response_alg", "must be RS256 or ES256")),
    }
    match doc.get("default_max_age") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|s| s <= MAX_DEFAULT_MAX_AGE) => {
            stored.insert("default_max_age".into(), Value::Number(n.clone()));
        }
        Some(_) => return Err(invalid("default_max_age", "must be a number of seconds (at most ten years)")),
    }
    match doc.get("require_auth_time") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            stored.insert("require_auth_time".into(), Value::Bool(*b));
        }
        Some(_) => return Err(invalid("require_auth_time", "must be true or false")),
    }
    match string(doc, "subject_type", 20)? {
        None | Some("public") => Ok(()),
        Some(_) => Err(invalid("subject_type", "only public subject identifiers are supported")),
    }
}

fn truncate(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    if short.len() < s.len() { format!("{short}…") } else { short }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reg(doc: Value) -> Result<Metadata, OAuthError> {
        parse(&doc, Source::Registration)
    }

    #[test]
    fn typical_mcp_client() {
        let m = reg(json!({
            "redirect_uris": ["http://localhost:33418/callback"],
            "client_name": "Claude Code",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "tools:read",
            "unknown_member": {"ignored": true}
        }))
        .unwrap();
        assert_eq!(m.application_type, "native", "inferred from a loopback redirect URI");
        assert_eq!(m.token_endpoint_auth_method, "none");
        assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
        assert!(!m.stored.contains_key("unknown_member"));
        assert_eq!(m.stored["scope"], "tools:read");
    }

    #[test]
    fn defaults_and_inference() {
        let m = reg(json!({"redirect_uris": ["https://app.example.com/cb"]})).unwrap();
        assert_eq!(m.application_type, "web");
        assert_eq!(m.grant_types, ["authorization_code"]);
        assert_eq!(m.response_types, ["code"]);
        assert_eq!(m.client_name, None);
        let m = reg(json!({"redirect_uris": ["com.example.app:/cb"]})).unwrap();
        assert_eq!(m.application_type, "native");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({}), ErrorCode::InvalidRedirectUri, "redirect_uris"),
            (json!({"redirect_uris": []}), ErrorCode::InvalidRedirectUri, "redirect_uris"),
            (json!({"redirect_uris": "https://a.example/cb"}), ErrorCode::InvalidRedirectUri, "redirect_uris"),
            (json!({"redirect_uris": [42]}), ErrorCode::InvalidRedirectUri, "redirect_uris"),
            (json!({"redirect_uris": ["javascript:alert(1)"]}), ErrorCode::InvalidRedirectUri, "javascript"),
            (json!({"redirect_uris": ["DATA:text/html,x"]}), ErrorCode::InvalidRedirectUri, "data"),
            (json!({"redirect_uris": ["https://a.example/cb#x"]}), ErrorCode::InvalidRedirectUri, "fragment"),
            (json!({"redirect_uris": ["https://*.a.example/cb"]}), ErrorCode::InvalidRedirectUri, "wildcard"),
            (json!({"redirect_uris": ["/cb"]}), ErrorCode::InvalidRedirectUri, "redirect_uris"),
            (json!({"redirect_uris": ["https://u@a.example/cb"]}), ErrorCode::InvalidRedirectUri, "user information"),
            (
                json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"}),
                ErrorCode::InvalidRedirectUri,
                "web",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "application_type": "desktop"}),
                ErrorCode::InvalidClientMetadata,
                "application_type",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]}),
                ErrorCode::InvalidClientMetadata,
                "grant_types",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
                ErrorCode::InvalidClientMetadata,
                "grant_types",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
                ErrorCode::InvalidClientMetadata,
                "grant_types",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
                ErrorCode::InvalidClientMetadata,
                "response_types",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
                ErrorCode::InvalidClientMetadata,
                "token_endpoint_auth_method",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "client_name": 7}),
                ErrorCode::InvalidClientMetadata,
                "client_name",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(201)}),
                ErrorCode::InvalidClientMetadata,
                "client_name",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:x"}),
                ErrorCode::InvalidClientMetadata,
                "logo_uri",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "contacts": "me@example.com"}),
                ErrorCode::InvalidClientMetadata,
                "contacts",
            ),
            (
                json!({"redirect_uris": ["https://a.example/cb"], "scope": "a\"b"}),
                ErrorCode::InvalidClientMetadata,
                "scope",
            ),
            (json!([1, 2]), ErrorCode::InvalidClientMetadata, "object"),
        ];
        for (doc, code, needle) in cases {
            let err = reg(doc.clone()).unwrap_err();
            assert_eq!(err.code, code, "{doc}: {err}");
            assert!(err.description.contains(needle), "{doc}: {err}");
        }
        let many: Vec<String> = (0..11).map(|i| format!("https://a.example/cb{i}")).collect();
        assert_eq!(reg(json!({"redirect_uris": many})).unwrap_err().code, ErrorCode::InvalidRedirectUri);
    }

    #[test]
    fn documents_are_public_clients() {
        let doc = |extra: Value| {
            let mut d =
                json!({"client_id": "https://app.example.com/client.json", "redirect_uris": ["http://127.0.0.1/cb"]});
            d.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            parse(&d, Source::Document)
        };
        assert!(doc(json!({})).is_ok());
        assert!(doc(json!({"token_endpoint_auth_method": ["private_key_jwt", "none"]})).is_ok());
        assert!(doc(json!({"token_endpoint_auth_method": "client_secret_basic"})).is_err());
        assert!(doc(json!({"token_endpoint_auth_method": ["client_secret_post"]})).is_err());
        assert!(doc(json!({"client_secret": "x"})).is_err());
    }

    #[test]
    fn unsupported_requests_are_narrowed_not_refused() {
        // Claude's document (tests/fixtures/clients/claude.json): a jwt-bearer grant on a public client.
        let claude = parse(
            &json!({
                "client_id": "https://claude.ai/oauth/mcp-oauth-client-metadata",
                "client_name": "Claude",
                "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
                "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none"
            }),
            Source::Document,
        )
        .unwrap();
        assert_eq!(claude.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(claude.replaced, ["grant_type urn:ietf:params:oauth:grant-type:jwt-bearer"]);
        // ChatGPT's document (tests/fixtures/clients/chatgpt.json): private_key_jwt, and a plural
        // variant that lists none; neither is stored.
        let chatgpt = parse(
            &json!({
                "client_id": "https://chatgpt.com/oauth/client.json",
                "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
                "token_endpoint_auth_signing_alg": "RS256",
                "jwks_uri": "https://chatgpt.com/oauth/jwks.json",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"]
            }),
            Source::Document,
        )
        .unwrap();
        assert_eq!(chatgpt.token_endpoint_auth_method, "none");
        assert!(chatgpt.stored.keys().all(|k| !k.contains("auth_method") && k != "jwks_uri"), "{:?}", chatgpt.stored);
        // Registration: extra response types and grant types dropped, an empty scope is no scope.
        let m = reg(json!({
            "redirect_uris": ["http://localhost:6274/oauth/callback"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code", "token"],
            "scope": ""
        }))
        .unwrap();
        assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(m.response_types, ["code"]);
        assert!(!m.stored.contains_key("scope"));
        assert_eq!(m.replaced.len(), 2, "{:?}", m.replaced);
        // Nothing usable left: refused.
        let e = reg(json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["refresh_token", "implicit"]}))
            .unwrap_err();
        assert!(e.description.contains("authorization_code"), "{e}");
    }

    #[test]
    fn a_confidential_registration_stays_confidential() {
        for uris in [json!(["http://127.0.0.1:8090/callback"]), json!(["cursor://anysphere.cursor-mcp/oauth/callback"])]
        {
            let m = reg(json!({"redirect_uris": uris, "token_endpoint_auth_method": "client_secret_post"})).unwrap();
            assert_eq!(m.token_endpoint_auth_method, "client_secret_post", "{uris}");
            assert_eq!(m.application_type, "native");
        }
    }

    #[test]
    fn openid_connect_members() {
        let m = reg(json!({
            "redirect_uris": ["https://app.example/cb"],
            "post_logout_redirect_uris": ["https://app.example/signed-out"],
            "id_token_signed_response_alg": "ES256",
            "default_max_age": 3600,
            "require_auth_time": true,
            "subject_type": "public"
        }))
        .unwrap();
        assert_eq!(m.stored["post_logout_redirect_uris"], json!(["https://app.example/signed-out"]));
        assert_eq!(m.stored["id_token_signed_response_alg"], "ES256");
        assert_eq!((&m.stored["default_max_age"], &m.stored["require_auth_time"]), (&json!(3600), &json!(true)));
        for (member, value, why) in [
            ("post_logout_redirect_uris", json!(["https://app.example/out#f"]), "fragment"),
            ("post_logout_redirect_uris", json!("https://app.example/out"), "array"),
            ("id_token_signed_response_alg", json!("none"), "RS256 or ES256"),
            ("id_token_signed_response_alg", json!("HS256"), "RS256 or ES256"),
            ("default_max_age", json!(-1), "seconds"),
            ("default_max_age", json!("60"), "seconds"),
            ("require_auth_time", json!("yes"), "true or false"),
            ("subject_type", json!("pairwise"), "public"),
        ] {
            let mut doc = json!({"redirect_uris": ["https://app.example/cb"]});
            doc[member] = value.clone();
            let e = reg(doc).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidClientMetadata, "{member} {value}");
            assert!(e.description.starts_with(member) && e.description.contains(why), "{member} {value}: {e}");
        }
    }
}
