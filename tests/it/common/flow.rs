//! Driving the authorization-code flow over HTTP as a browser and a client would.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tessera::oauth::secret::Secret;
use tessera::store;
use uuid::Uuid;

use super::TestApp;

pub const PASSWORD: &str = "correct horse battery staple";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
pub const REDIRECT: &str = "http://127.0.0.1/callback";

/// What a test registered.
#[derive(Clone)]
pub struct Fixture {
    pub resource: String,
    pub client_id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
    pub username: String,
    pub user_id: Uuid,
}

pub struct ClientSpec<'a> {
    pub name: &'a str,
    pub redirect_uris: Vec<String>,
    pub confidential: bool,
    pub grant_types: Vec<&'a str>,
    pub origin: &'a str,
    pub allowed_resources: Vec<Uuid>,
}

impl ClientSpec<'_> {
    /// A confidential client that only uses `client_credentials`.
    pub fn service() -> Self {
        Self {
            confidential: true,
            redirect_uris: vec![],
            grant_types: vec!["client_credentials"],
            ..Default::default()
        }
    }
}

impl Default for ClientSpec<'_> {
    fn default() -> Self {
        Self {
            name: "Test Client",
            redirect_uris: vec![REDIRECT.into()],
            confidential: false,
            grant_types: vec!["authorization_code", "refresh_token"],
            origin: "admin",
            allowed_resources: vec![],
        }
    }
}

impl TestApp {
    /// Register a resource with scopes `tools:read` (default) and `tools:write`.
    pub async fn add_resource(&self, uri: &str, is_default: bool) -> Uuid {
        let r = store::resources::Resource {
            id: Uuid::new_v4(),
            uri: uri.to_owned(),
            name: "Example MCP".into(),
            scopes: [("tools:read", "Read your tools"), ("tools:write", "Run tools that change things")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            default_scopes: vec!["tools:read".into()],
            token_ttl: std::time::Duration::from_secs(600),
            is_default,
            credential_id: None,
            credential_secret_hash: None,
            scope_details: Default::default(),
        };
        store::resources::add(&self.db.pool, &r).await.unwrap();
        self.state.reload_resources().await;
        r.id
    }

    pub async fn add_user(&self, username: &str) -> Uuid {
        let id = Uuid::new_v4();
        let hash = tessera::signin::password::hash_blocking(PASSWORD).unwrap();
        assert!(store::users::insert(&self.db.pool, id, username, None, Some(&hash)).await.unwrap());
        id
    }

    pub async fn add_client(&self, spec: ClientSpec<'_>) -> (String, Option<String>) {
        let secret = spec.confidential.then(Secret::generate);
        let mut client =
            store::clients::Client::new(tessera::oauth::secret::new_client_id(), spec.name.to_owned(), spec.origin);
        if spec.confidential {
            client.token_endpoint_auth_method = "client_secret_basic".into();
        }
        client.secret_hash = secret.as_ref().map(|s| s.digest().to_vec());
        client.redirect_uris = spec.redirect_uris;
        client.grant_types = spec.grant_types.into_iter().map(str::to_owned).collect();
        client.allowed_resources = spec.allowed_resources;
        store::clients::insert(&self.db.pool, &client).await.unwrap();
        (client.client_id, secret.map(|s| s.expose().to_owned()))
    }

    /// A default resource, a user `alice`, and a public client with a loopback redirect URI.
    pub async fn fixture(&self) -> Fixture {
        self.add_resource(RESOURCE, true).await;
        let user_id = self.add_user("alice").await;
        let (client_id, secret) = self.add_client(ClientSpec::default()).await;
        Fixture {
            resource: RESOURCE.into(),
            client_id,
            secret,
            redirect_uri: REDIRECT.into(),
            username: "alice".into(),
            user_id,
        }
    }

    /// Exchange a code as a public client (`verifier` omitted when `None`).
    pub async fn exchange(
        &self,
        code: &str,
        verifier: Option<&str>,
        redirect_uri: &str,
        client_id: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v));
        }
        self.token(&form, None).await
    }

    /// POST /token with a form, optionally authenticating with Basic.
    pub async fn token(
        &self,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.post(self.url("/token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = Secret::generate().expose().to_owned();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce { verifier, challenge }
}

/// An authorization URL with PKCE, `state=xyz` and the given extra parameters.
pub fn authorize_url(
    app: &TestApp,
    client_id: &str,
    redirect_uri: &str,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "xyz");
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    format!("{}?{}", app.url("/authorize"), q.finish())
}

/// The value of a hidden form field in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden {name} in:\n{html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", res.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A browser: its own cookie jar, sends Origin like a real one on form posts.
pub struct Browser<'a> {
    pub app: &'a TestApp,
    pub http: reqwest::Client,
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self { app, http: super::client() }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.app.url(path))
            .header("origin", &self.app.origin)
            .header("sec-fetch-site", "same-origin")
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Sign in on a login page reached from `login_url`; returns the response to the POST.
    pub async fn login(&self, login_url: &str, username: &str, password: &str) -> reqwest::Response {
        let page = self.get(login_url).await;
        assert_eq!(page.status(), 200, "login page");
        let html = page.text().await.unwrap();
        let csrf = hidden(&html, "csrf_token");
        let mut form = vec![("username", username), ("password", password), ("csrf_token", csrf.as_str())];
        let request = html.contains("name=\"request\"").then(|| hidden(&html, "request"));
        if let Some(r) = request.as_deref() {
            form.push(("request", r));
        }
        self.post_form("/login", &form).await
    }

    /// Answer a consent page with `decision`; returns the response to the POST.
    pub async fn consent(&self, consent_url: &str, decision: &str) -> reqwest::Response {
        let page = self.get(consent_url).await;
        assert_eq!(page.status(), 200, "consent page");
        let html = page.text().await.unwrap();
        let csrf = hidden(&html, "csrf_token");
        let request = hidden(&html, "request");
        self.post_form("/consent", &[("csrf_token", &csrf), ("request", &request), ("decision", decision)]).await
    }

    /// Run authorize → (login) → (consent: allow) until the redirect to the client; return its URL.
    pub async fn authorize(&self, url: &str, username: &str) -> String {
        let mut res = self.get(url).await;
        for _ in 0..4 {
            assert_eq!(res.status(), 303, "expected a redirect, got {}: {}", res.status(), url);
            let next = location(&res);
            if next.starts_with(&format!("{}/login", self.app.issuer)) {
                res = self.login(&next, username, PASSWORD).await;
            } else if next.starts_with(&format!("{}/consent", self.app.issuer)) {
                res = self.consent(&next, "allow").await;
            } else {
                return next;
            }
        }
        panic!("too many steps");
    }
}

/// Run the whole flow and exchange the code; returns the token response.
pub async fn code_and_tokens(app: &TestApp, f: &Fixture, extra: &[(&str, &str)]) -> Value {
    let browser = Browser::new(app);
    let pkce = pkce();
    let callback =
        browser.authorize(&authorize_url(app, &f.client_id, &f.redirect_uri, &pkce, extra), &f.username).await;
    let code = query(&callback).remove("code").expect("code in callback");
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &f.redirect_uri),
                ("code_verifier", &pkce.verifier),
                ("client_id", &f.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Decode a JWT's claims after verifying it against the app's JWKS.
pub async fn verify_jwt(app: &TestApp, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let jwks: Value = app.get("/jwks.json").await.json().await.unwrap();
    let kid = header.kid.unwrap();
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid in JWKS");
    let decoding =
        jsonwebtoken::DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[&app.issuer]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &decoding, &validation).unwrap().claims
}
