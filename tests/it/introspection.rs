//! Introspection (RFC 7662) and revocation (RFC 7009), across instances and with the database down.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::oauth::secret::Secret;

use crate::common::flow::{ClientSpec, Fixture, RESOURCE, code_and_tokens};
use crate::common::{Options, TestApp};

/// Give a registered resource introspection credentials.
/// Introspection credentials for the resource `uri`.
pub async fn credentials(app: &TestApp, uri: &str) -> (String, String) {
    let id = format!("rs_{}", tessera::oauth::secret::new_client_id());
    let secret = Secret::generate();
    assert!(tessera::store::resources::set_credentials(&app.db.pool, uri, &id, &secret.digest()).await.unwrap());
    app.state.reload_resources().await;
    (id, secret.expose().to_owned())
}

async fn introspect(
    app: &TestApp,
    token: &str,
    creds: (&str, &str),
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = app
        .client
        .post(app.url("/introspect"))
        .basic_auth(creds.0, Some(creds.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

async fn revoke(app: &TestApp, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> StatusCode {
    let mut req = app.client.post(app.url("/revoke")).form(form);
    if let Some((id, secret)) = basic {
        req = req.basic_auth(id, Some(secret));
    }
    req.send().await.unwrap().status()
}

struct Setup {
    app: TestApp,
    f: Fixture,
    rs: (String, String),
    tokens: Value,
}

async fn setup() -> Setup {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let rs = credentials(&app, RESOURCE).await;
    let tokens = code_and_tokens(&app, &f, &[("scope", "tools:read tools:write")]).await;
    Setup { app, f, rs, tokens }
}

fn access(s: &Setup) -> String {
    s.tokens["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_active_token_is_described() {
    let s = setup().await;
    let (status, headers, body) = introspect(&s.app, &access(&s), (&s.rs.0, &s.rs.1)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["active"], true);
    assert_eq!(body["iss"], s.app.issuer);
    assert_eq!(body["sub"], s.f.user_id.to_string());
    assert_eq!(body["aud"], RESOURCE, "aud is a string");
    assert_eq!(body["client_id"], s.f.client_id);
    assert_eq!(body["scope"], "tools:read tools:write");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["iat"].is_i64() && body["exp"].is_i64() && body["jti"].is_string());
    // client_secret_post works as well; token_type_hint is only a hint.
    let res = s
        .app
        .client
        .post(s.app.url("/introspect"))
        .form(&[
            ("token", access(&s).as_str()),
            ("token_type_hint", "refresh_token"),
            ("client_id", &s.rs.0),
            ("client_secret", &s.rs.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["active"], true);
    let meta: Value = s.app.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert_eq!(meta["introspection_endpoint"], s.app.url("/introspect"));
    assert_eq!(meta["revocation_endpoint"], s.app.url("/revoke"));
    assert!(meta["introspection_endpoint_auth_methods_supported"].is_array());
    assert!(meta["revocation_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("none")));
}

#[tokio::test]
async fn inactive_tokens_are_exactly_active_false() {
    let s = setup().await;
    let app = &s.app;
    let creds = (s.rs.0.as_str(), s.rs.1.as_str());
    let good = access(&s);
    // Tampered payload, tampered signature, garbage, a refresh token presented to a resource.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload = parts[1].clone().into_bytes();
    payload[10] = if payload[10] == b'A' { b'B' } else { b'A' };
    parts[1] = String::from_utf8(payload).unwrap();
    let tampered = parts.join(".");
    let mut sig_tampered = good.clone();
    sig_tampered.replace_range(good.len() - 3.., "AAA");
    // Signed by a key Tessera never published.
    let master = tessera::config::MasterKey::generate();
    let foreign = {
        let new = tessera::tokens::keys::generate(&master, tessera::tokens::keys::Alg::Es256).unwrap();
        let row = tessera::store::keys::KeyRow {
            kid: new.kid.clone(),
            alg: "ES256".into(),
            public_jwk: new.public_jwk.clone(),
            private_key_enc: new.private_key_enc,
            created_at: chrono::Utc::now(),
            activates_at: chrono::Utc::now(),
        };
        // Sign the same claims with a fresh key: kid unknown to the ring.
        let claims: Value = crate::common::flow::verify_jwt(app, &good).await;
        let key = tessera::tokens::keys::LoadedKey::from_row(&master, &row).unwrap();
        key.sign_access_token(&claims).unwrap()
    };
    // Expired (beyond the clock-skew leeway), but properly signed.
    let mut claims: Value = crate::common::flow::verify_jwt(app, &good).await;
    claims["exp"] = json!(chrono::Utc::now().timestamp() - tessera::tokens::CLOCK_SKEW_LEEWAY - 1);
    let expired = app.state.keys.signing_key().unwrap().sign_access_token(&claims).unwrap();
    // Signed by us, but for another issuer.
    let mut other_iss = crate::common::flow::verify_jwt(app, &good).await;
    other_iss["iss"] = json!("https://evil.example");
    let other_iss = app.state.keys.signing_key().unwrap().sign_access_token(&other_iss).unwrap();
    for token in [
        tampered.as_str(),
        sig_tampered.as_str(),
        "garbage",
        "a.b.c",
        "",
        s.tokens["refresh_token"].as_str().unwrap(),
        foreign.as_str(),
        expired.as_str(),
        other_iss.as_str(),
    ] {
        let (status, _, body) = introspect(app, token, creds).await;
        if token.is_empty() {
            assert_eq!(status, 400, "an empty token parameter counts as missing");
            continue;
        }
        assert_eq!(status, 200, "{token}");
        assert_eq!(body, json!({"active": false}), "{token}");
    }
    // Expired by this clock a few seconds ago, within the skew another instance's clock may
    // have: still active.
    claims["exp"] = json!(chrono::Utc::now().timestamp() - 3);
    let just_expired = app.state.keys.signing_key().unwrap().sign_access_token(&claims).unwrap();
    let (status, _, body) = introspect(app, &just_expired, creds).await;
    assert_eq!((status.as_u16(), &body["active"]), (200, &json!(true)), "{body}");
}

#[tokio::test]
async fn another_resource_sees_active_false() {
    let s = setup().await;
    s.app.add_resource("https://other.example.com/mcp", false).await;
    let other = credentials(&s.app, "https://other.example.com/mcp").await;
    let (status, _, body) = introspect(&s.app, &access(&s), (&other.0, &other.1)).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"active": false}));
}

#[tokio::test]
async fn callers_must_authenticate() {
    let s = setup().await;
    let app = &s.app;
    let token = access(&s);
    let res = app.client.post(app.url("/introspect")).form(&[("token", token.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_client");
    let (status, headers, body) = introspect(app, &token, (&s.rs.0, "wrong-secret")).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = introspect(app, &token, ("rs_unknown", &s.rs.1)).await;
    assert_eq!(status, 401);
    // A public client cannot introspect.
    let res = app
        .client
        .post(app.url("/introspect"))
        .form(&[("token", token.as_str()), ("client_id", s.f.client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn refresh_reuse_and_revocation_make_tokens_inactive() {
    let s = setup().await;
    let app = &s.app;
    let creds = (s.rs.0.as_str(), s.rs.1.as_str());
    let refresh = s.tokens["refresh_token"].as_str().unwrap();
    // Rotate twice (the second use ends the first token's reuse grace), then reuse the first
    // refresh token: the grant is revoked.
    let (_, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &s.f.client_id)], None)
        .await;
    let second_access = body["access_token"].as_str().unwrap().to_owned();
    let second_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, _, _) = app
        .token(
            &[("grant_type", "refresh_token"), ("refresh_token", &second_refresh), ("client_id", &s.f.client_id)],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(introspect(app, &second_access, creds).await.2["active"], true);
    app.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &s.f.client_id)], None)
        .await;
    for token in [access(&s), second_access] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let (_, _, body) = introspect(app, &token, creds).await;
            if body == json!({"active": false}) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "token from a revoked grant still active");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn revocation_by_the_owner_other_clients_and_unknown_tokens() {
    let s = setup().await;
    let app = &s.app;
    let creds = (s.rs.0.as_str(), s.rs.1.as_str());
    let (other, _) = app.add_client(ClientSpec::default()).await;
    let token = access(&s);
    let refresh = s.tokens["refresh_token"].as_str().unwrap().to_owned();

    // Another client: 200, and nothing happens.
    assert_eq!(revoke(app, &[("token", &token), ("client_id", &other)], None).await, 200);
    assert_eq!(revoke(app, &[("token", &refresh), ("client_id", &other)], None).await, 200);
    assert_eq!(introspect(app, &token, creds).await.2["active"], true);
    // Unknown tokens: 200.
    assert_eq!(revoke(app, &[("token", "no-such-token"), ("client_id", &s.f.client_id)], None).await, 200);
    assert_eq!(revoke(app, &[("token", "x.y.z"), ("client_id", &s.f.client_id)], None).await, 200);
    // No client authentication: 401; no token: 400.
    assert_eq!(revoke(app, &[("token", &token)], None).await, 401);
    assert_eq!(revoke(app, &[("client_id", &s.f.client_id)], None).await, 400);

    // The owner revokes the access token: on the deny list, inactive at once.
    assert_eq!(
        revoke(app, &[("token", &token), ("token_type_hint", "access_token"), ("client_id", &s.f.client_id)], None)
            .await,
        200
    );
    // Immediately, on the instance that revoked it (RFC 7009 §2.2).
    assert_eq!(introspect(app, &token, creds).await.2, json!({"active": false}));
    // The refresh token still works (revoking an access token does not end the grant)...
    let (status, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", &s.f.client_id)], None)
        .await;
    assert_eq!(status, 200);
    let new_access = body["access_token"].as_str().unwrap().to_owned();
    let new_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // ...until it is revoked, which ends the grant and every access token from it.
    assert_eq!(revoke(app, &[("token", &new_refresh), ("client_id", &s.f.client_id)], None).await, 200);
    assert_eq!(introspect(app, &new_access, creds).await.2, json!({"active": false}), "the grant ends immediately");
    let (status, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &new_refresh), ("client_id", &s.f.client_id)], None)
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

#[tokio::test]
async fn confidential_clients_introspect_their_own_refresh_tokens() {
    let app = TestApp::spawn().await;
    let mut f = app.fixture().await;
    let (id, secret) = app.add_client(ClientSpec { confidential: true, ..Default::default() }).await;
    let secret = secret.unwrap();
    let (other, other_secret) = app.add_client(ClientSpec { confidential: true, ..Default::default() }).await;
    f.client_id = id.clone();
    // Exchange with Basic auth.
    let browser = crate::common::flow::Browser::new(&app);
    let p = crate::common::flow::pkce();
    let callback =
        browser.authorize(&crate::common::flow::authorize_url(&app, &id, &f.redirect_uri, &p, &[]), "alice").await;
    let code = crate::common::flow::query(&callback)["code"].clone();
    let (_, _, tokens) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &f.redirect_uri),
                ("code_verifier", &p.verifier),
            ],
            Some((&id, &secret)),
        )
        .await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (_, _, body) = introspect(&app, refresh, (&id, &secret)).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    assert_eq!(body["client_id"], id.as_str());
    assert_eq!(body["aud"], RESOURCE);
    let (_, _, body) = introspect(&app, refresh, (&other, &other_secret.unwrap())).await;
    assert_eq!(body, json!({"active": false}), "not another client's");
    // A client is not a resource: access tokens are not active for it.
    let (_, _, body) = introspect(&app, tokens["access_token"].as_str().unwrap(), (&id, &secret)).await;
    assert_eq!(body, json!({"active": false}));
}

#[tokio::test]
async fn client_credentials_tokens_die_with_their_client() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let rs = credentials(&app, RESOURCE).await;
    let (id, secret) = app.add_client(ClientSpec::service()).await;
    let (_, _, body) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret.unwrap()))).await;
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(introspect(&app, token, (&rs.0, &rs.1)).await.2["active"], true);
    assert!(tessera::store::clients::delete(&app.db.pool, &id).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while introspect(&app, token, (&rs.0, &rs.1)).await.2["active"] == true {
        assert!(tokio::time::Instant::now() < deadline, "token of a deleted client still active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revocation_on_one_instance_is_seen_by_another_within_a_second() {
    let s = setup().await;
    let b =
        TestApp::spawn_on(s.app.db.clone(), Options { issuer: Some(s.app.issuer.clone()), ..Default::default() }).await;
    let creds = (s.rs.0.as_str(), s.rs.1.as_str());
    let token = access(&s);
    // Instance B has looked at the token (its caches are warm)...
    assert_eq!(introspect(&b, &token, creds).await.2["active"], true);
    assert_eq!(introspect(&b, &token, creds).await.2["active"], true);
    // ...then A revokes the grant through the refresh token.
    let refresh = s.tokens["refresh_token"].as_str().unwrap();
    let started = std::time::Instant::now();
    assert_eq!(revoke(&s.app, &[("token", refresh), ("client_id", &s.f.client_id)], None).await, 200);
    loop {
        let (_, _, body) = introspect(&b, &token, creds).await;
        if body == json!({"active": false}) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "instance B still says active after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same for an access-token revocation.
    let tokens = code_and_tokens(&s.app, &s.f, &[]).await;
    let token = tokens["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, token, creds).await.2["active"], true);
    let started = std::time::Instant::now();
    assert_eq!(revoke(&s.app, &[("token", token), ("client_id", &s.f.client_id)], None).await, 200);
    while introspect(&b, token, creds).await.2["active"] == true {
        assert!(started.elapsed() < Duration::from_secs(1), "instance B missed the access-token revocation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn revocation_with_the_database_down_is_503() {
    let s = setup().await;
    let refresh = s.tokens["refresh_token"].as_str().unwrap().to_owned();
    let token = access(&s);
    s.app.db.drop_now().await;
    // The client is cached, so authentication passes and the revocation itself fails.
    let status = revoke(&s.app, &[("token", &refresh), ("client_id", &s.f.client_id)], None).await;
    assert_eq!(status, 503);
    let status = revoke(&s.app, &[("token", &token), ("client_id", &s.f.client_id)], None).await;
    assert!(status == 503, "revoking an access token with the database down: {status}");
}
