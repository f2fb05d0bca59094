//! The client zoo: every real MCP client in `tests/fixtures/clients/` (each file cites where its
//! registration body or metadata document and redirect URIs come from) registers itself or is
//! described by its document, then goes through `/authorize`, login, consent, the code exchange
//! and one refresh, sending what that client sends. A new client is one fixture file.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::common::docserver::{DocServer, Reply};
use crate::common::flow::{Browser, RESOURCE, location, pkce, query};
use crate::common::{Options, TestApp};

/// What `$DISCOVERED_SCOPES` stands for: the resource's scope, and `offline_access`, which
/// Tessera's metadata lists and most clients then ask for.
const DISCOVERED_SCOPES: &str = "tools:read offline_access";

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clients");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            let fixture: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            (name, fixture)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Replace the placeholders; a registration member that is exactly `$DISCOVERED_SCOPES` stays as
/// the client would send it (the scope string).
fn substitute(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(
            s.replace("$DISCOVERED_SCOPES", DISCOVERED_SCOPES)
                .replace("$PRM_RESOURCE", RESOURCE)
                .replace("$RESOURCE", RESOURCE),
        ),
        Value::Array(items) => Value::Array(items.iter().map(substitute).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), substitute(v))).collect()),
        other => other.clone(),
    }
}

/// The client as Tessera will know it: its id, and its secret and method for the token endpoint.
struct Registered {
    client_id: String,
    secret: Option<String>,
    method: String,
}

async fn register(app: &TestApp, docs: &(DocServer, String), name: &str, fixture: &Value) -> Registered {
    match fixture["kind"].as_str().unwrap() {
        "dcr" => {
            let body = substitute(&fixture["registration"]);
            let res = app.client.post(app.url("/register")).json(&body).send().await.unwrap();
            let status = res.status();
            let info: Value = res.json().await.unwrap();
            assert_eq!(status, 201, "{name}: registration refused: {info}");
            // The client follows what the registration response says (RFC 7591 §3.2.1).
            Registered {
                client_id: info["client_id"].as_str().unwrap().to_owned(),
                secret: info["client_secret"].as_str().map(str::to_owned),
                method: info["token_endpoint_auth_method"].as_str().unwrap().to_owned(),
            }
        }
        "cimd" => {
            // The document as published, served from loopback under its own name.
            let path = format!("/{name}/client.json");
            let client_id = format!("{}{path}", docs.1);
            let mut doc = fixture["metadata_document"].clone();
            doc["client_id"] = json!(client_id);
            docs.0.set(&path, Reply::json(doc));
            Registered { client_id, secret: None, method: "none".into() }
        }
        other => panic!("{name}: unknown kind {other}"),
    }
}

/// The authorization URL the client builds: its redirect URI, scope and extra parameters.
fn authorize_url(app: &TestApp, fixture: &Value, client_id: &str, challenge: &str) -> String {
    let authorize = substitute(&fixture["authorize"]);
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", fixture["redirect_uri"].as_str().unwrap())
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "zoo-state");
    let scope = authorize["scope"].as_str();
    if let Some(scope) = scope {
        q.append_pair("scope", scope);
    }
    if let Some(extra) = authorize["extra_params"].as_object() {
        for (k, v) in extra {
            // Values may carry a note after the placeholder ("$RESOURCE (ASSUMED ...)").
            let v = v.as_str().unwrap().split(' ').next().unwrap();
            q.append_pair(k, v);
        }
    }
    // Clients that ask for offline_access add prompt=consent (MCP specification, SEP-1046).
    let consent_when_offline =
        authorize["conditional_params"]["prompt"].as_str().is_some_and(|c| c.starts_with("consent"));
    if consent_when_offline && scope.is_some_and(|s| s.contains("offline_access")) {
        q.append_pair("prompt", "consent");
    }
    format!("{}?{}", app.url("/authorize"), q.finish())
}

/// POST /token as the client authenticates there.
async fn token(app: &TestApp, client: &Registered, form: &[(&str, &str)]) -> (u16, Value) {
    let mut form: Vec<(&str, &str)> = form.to_vec();
    let mut req = app.client.post(app.url("/token"));
    match (client.method.as_str(), client.secret.as_deref()) {
        ("client_secret_basic", Some(secret)) => req = req.basic_auth(&client.client_id, Some(secret)),
        ("client_secret_post", Some(secret)) => {
            form.push(("client_id", &client.client_id));
            form.push(("client_secret", secret));
        }
        _ => form.push(("client_id", &client.client_id)),
    }
    let res = req.form(&form).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_real_client_connects() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_CIMD_ALLOW_LOOPBACK", "true".into())],
        ..Default::default()
    })
    .await;
    app.add_resource(RESOURCE, true).await;
    app.add_user("alice").await;
    let docs = DocServer::start().await;
    let zoo = fixtures();
    assert!(zoo.len() >= 11, "the zoo has every client of the issue: {}", zoo.len());
    for (name, fixture) in &zoo {
        assert!(fixture["sources"].as_array().is_some_and(|s| !s.is_empty()), "{name}: cite the sources");
        let client = register(&app, &docs, name, fixture).await;
        let p = pkce();
        let redirect_uri = fixture["redirect_uri"].as_str().unwrap();
        let browser = Browser::new(&app);
        let callback = browser.authorize(&authorize_url(&app, fixture, &client.client_id, &p.challenge), "alice").await;
        assert!(callback.starts_with(redirect_uri), "{name}: sent to {callback}");
        let params = query(&callback);
        assert_eq!(params.get("state").map(String::as_str), Some("zoo-state"), "{name}");
        assert_eq!(params.get("iss"), Some(&app.issuer), "{name}: RFC 9207 iss");
        let code = params.get("code").unwrap_or_else(|| panic!("{name}: no code in {callback}"));
        let (status, tokens) = token(
            &app,
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &p.verifier),
                ("resource", RESOURCE),
            ],
        )
        .await;
        assert_eq!(status, 200, "{name}: code exchange: {tokens}");
        let claims = crate::common::flow::verify_jwt(&app, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], RESOURCE, "{name}");
        let refresh = tokens["refresh_token"].as_str().unwrap_or_else(|| panic!("{name}: no refresh token: {tokens}"));
        let (status, refreshed) = token(
            &app,
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("resource", RESOURCE)],
        )
        .await;
        assert_eq!(status, 200, "{name}: refresh: {refreshed}");
        assert_ne!(refreshed["refresh_token"].as_str(), Some(refresh), "{name}: rotated");
    }
}

#[tokio::test]
async fn the_consent_page_shows_where_each_client_returns() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_CIMD_ALLOW_LOOPBACK", "true".into())],
        ..Default::default()
    })
    .await;
    app.add_resource(RESOURCE, true).await;
    app.add_user("alice").await;
    let docs = DocServer::start().await;
    for (name, fixture) in fixtures().iter().filter(|(n, _)| ["claude", "cursor", "vscode"].contains(&n.as_str())) {
        let client = register(&app, &docs, name, fixture).await;
        let browser = Browser::new(&app);
        let res = browser.get(&authorize_url(&app, fixture, &client.client_id, &pkce().challenge)).await;
        let res = browser.login(&location(&res), "alice", crate::common::flow::PASSWORD).await;
        let page = browser.get(&location(&res)).await.text().await.unwrap();
        let host = url::Url::parse(fixture["redirect_uri"].as_str().unwrap()).unwrap().host_str().unwrap().to_owned();
        assert!(page.contains(&host), "{name}: the redirect host {host} is shown");
        assert!(page.contains("unverified"), "{name}: self-registered clients are marked unverified");
    }
}
