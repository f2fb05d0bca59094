//! OpenID Connect: ID tokens from the code flow and refresh, userinfo, discovery, the OpenID
//! parameters of /authorize, RP-initiated logout, and the OpenID client metadata.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::common::flow::{
    Browser, ClientSpec, Fixture, PASSWORD, REDIRECT, RESOURCE, authorize_url, location, pkce, query, verify_jwt,
};
use crate::common::{Options, TestApp, admin, admin_fails};

const OPENID: &str = "openid profile email";

/// Verify an ID token against the JWKS with the algorithm its key has, for `client_id`; its
/// header and claims.
async fn verify_id_token(app: &TestApp, token: &str, client_id: &str) -> (jsonwebtoken::Header, Value) {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwks: Value = app.get("/jwks.json").await.json().await.unwrap();
    let kid = header.kid.clone().unwrap();
    let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).expect("kid in JWKS");
    let s = |name: &str| key[name].as_str().unwrap();
    let decoding = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_components(s("n"), s("e")).unwrap(),
        Algorithm::ES256 => DecodingKey::from_ec_components(s("x"), s("y")).unwrap(),
        other => panic!("unexpected ID token algorithm {other:?}"),
    };
    assert_eq!(key["alg"], json!(format!("{:?}", header.alg)), "the key's algorithm signs");
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&app.issuer]);
    validation.set_audience(&[client_id]);
    let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation).unwrap().claims;
    (header, claims)
}

/// The token with one character of its signature changed.
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 20;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn at_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

async fn set_profile(app: &TestApp, username: &str) {
    let change = tessera::store::users::ProfileChange {
        email: Some(Some("alice@example.com")),
        name: Some(Some("Alice Liddell")),
        email_verified: Some(true),
    };
    tessera::store::users::update_profile(&app.db.pool, username, &change).await.unwrap().unwrap();
}

/// Authorize (signing in as alice as needed) and exchange the code; the callback's query and
/// the token response.
async fn sign_in(
    app: &TestApp,
    browser: &Browser<'_>,
    f: &Fixture,
    extra: &[(&str, &str)],
) -> (std::collections::HashMap<String, String>, Value) {
    let p = pkce();
    let callback = browser.authorize(&authorize_url(app, &f.client_id, &f.redirect_uri, &p, extra), &f.username).await;
    let q = query(&callback);
    let code = q.get("code").unwrap_or_else(|| panic!("no code: {callback}"));
    let (status, _, body) = app.exchange(code, Some(&p.verifier), &f.redirect_uri, &f.client_id).await;
    assert_eq!(status, 200, "{body}");
    (q, body)
}

/// Register a client over RFC 7591 with extra metadata; its client_id.
async fn register(app: &TestApp, extra: Value) -> String {
    let mut doc = json!({"client_name": "OIDC App", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"]});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    let res = app.client.post(app.url("/register")).json(&doc).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

fn fixture_for(f: &Fixture, client_id: String) -> Fixture {
    Fixture { client_id, ..f.clone() }
}

#[tokio::test]
async fn the_code_flow_returns_an_id_token_and_refresh_keeps_issuing_them() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    set_profile(&app, "alice").await;
    let browser = Browser::new(&app);
    let before = chrono::Utc::now().timestamp();
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", OPENID), ("nonce", "n-0S6_WzA2Mj")]).await;
    assert_eq!(body["scope"], "email openid profile");
    let access = body["access_token"].as_str().unwrap();
    let (header, id) = verify_id_token(&app, body["id_token"].as_str().expect("an ID token"), &f.client_id).await;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "RS256 unless the client registered another");
    assert_eq!(id["iss"], app.issuer);
    assert_eq!(id["sub"], f.user_id.to_string());
    assert_eq!(id["aud"], f.client_id, "aud is the client, alone");
    assert_eq!(id["azp"], f.client_id);
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["at_hash"], at_hash(access));
    let auth_time = id["auth_time"].as_i64().unwrap();
    assert!((before - 1..=chrono::Utc::now().timestamp()).contains(&auth_time), "{auth_time}");
    assert!(id["sid"].as_str().is_some_and(|s| s.len() >= 16));
    assert_eq!(id["exp"].as_i64().unwrap() - id["iat"].as_i64().unwrap(), body["expires_in"].as_i64().unwrap());
    assert_eq!(id["name"], "Alice Liddell");
    assert_eq!(id["preferred_username"], "alice");
    assert_eq!(id["email"], "alice@example.com");
    assert_eq!(id["email_verified"], true);
    assert!(id["updated_at"].as_i64().is_some());

    // With no resource named, the access token is for userinfo, which answers the same claims.
    let claims = verify_jwt(&app, access).await;
    assert_eq!(claims["aud"], app.url("/userinfo"));
    let res = app.client.get(app.url("/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let info: Value = res.json().await.unwrap();
    assert_eq!(
        info,
        json!({"sub": f.user_id.to_string(), "name": "Alice Liddell", "preferred_username": "alice",
               "email": "alice@example.com", "email_verified": true, "updated_at": id["updated_at"]})
    );
    // POST, with the token in the header or in the form (RFC 6750 §2.2).
    let res = app.client.post(app.url("/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), info);
    let res = app.client.post(app.url("/userinfo")).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), info);

    // Refresh: a new ID token for the same sign-in, without a nonce (Core §12.2).
    let refresh = body["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", f.client_id.as_str())];
    let (status, _, again) = app.token(&form, None).await;
    assert_eq!(status, 200, "{again}");
    let (_, id2) =
        verify_id_token(&app, again["id_token"].as_str().expect("refresh issues an ID token"), &f.client_id).await;
    for same in ["iss", "sub", "aud", "azp", "auth_time", "sid", "email"] {
        assert_eq!(id2[same], id[same], "{same}");
    }
    assert!(id2.get("nonce").is_none(), "no nonce after a refresh");
    assert_eq!(id2["at_hash"], at_hash(again["access_token"].as_str().unwrap()));
}

#[tokio::test]
async fn scopes_release_their_claims_and_nothing_else() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    set_profile(&app, "alice").await;
    let browser = Browser::new(&app);
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let (_, id) = verify_id_token(&app, body["id_token"].as_str().unwrap(), &f.client_id).await;
    for absent in ["name", "preferred_username", "email", "email_verified", "updated_at", "nonce"] {
        assert!(id.get(absent).is_none(), "{absent} without its scope: {id}");
    }
    let res = app.client.get(app.url("/userinfo")).bearer_auth(body["access_token"].as_str().unwrap()).send().await;
    assert_eq!(res.unwrap().json::<Value>().await.unwrap(), json!({"sub": f.user_id.to_string()}));
    // Without openid: no ID token at all.
    let (_, body) = sign_in(&app, &browser, &f, &[]).await;
    assert!(body.get("id_token").is_none(), "{body}");
}

#[tokio::test]
async fn es256_id_tokens_for_clients_that_registered_it() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let client_id = register(&app, json!({"id_token_signed_response_alg": "ES256"})).await;
    let f = fixture_for(&f, client_id);
    let (_, body) = sign_in(&app, &Browser::new(&app), &f, &[("scope", "openid")]).await;
    let (header, id) = verify_id_token(&app, body["id_token"].as_str().unwrap(), &f.client_id).await;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(id["at_hash"], at_hash(body["access_token"].as_str().unwrap()));
}

#[tokio::test]
async fn tokens_for_an_mcp_server_are_refused_at_userinfo() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "openid tools:read"), ("resource", RESOURCE)]).await;
    assert!(body["id_token"].as_str().is_some(), "the ID token comes with any openid grant");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(verify_jwt(&app, access).await["aud"], RESOURCE);
    let res = app.client.get(app.url("/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_token");

    // No token; a malformed one; two at once.
    let res = app.client.get(app.url("/userinfo")).send().await.unwrap();
    assert_eq!(
        (res.status(), res.headers()["www-authenticate"].to_str().unwrap()),
        (StatusCode::UNAUTHORIZED, "Bearer")
    );
    let res = app.client.get(app.url("/userinfo")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = app.client.post(app.url("/userinfo")).bearer_auth(access).form(&[("access_token", access)]).send();
    assert_eq!(res.await.unwrap().status(), 400);

    // A userinfo token without openid: 403 insufficient_scope.
    let userinfo = app.url("/userinfo");
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "profile"), ("resource", &userinfo)]).await;
    assert!(body.get("id_token").is_none());
    let res = app.client.get(app.url("/userinfo")).bearer_auth(body["access_token"].as_str().unwrap()).send().await;
    let res = res.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(res.headers()["www-authenticate"], r#"Bearer error="insufficient_scope", scope="openid""#);

    // Revoked, or its user disabled: refused.
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let access = body["access_token"].as_str().unwrap().to_owned();
    let get = || app.client.get(app.url("/userinfo")).bearer_auth(&access).send();
    assert_eq!(get().await.unwrap().status(), 200);
    let res = app.client.post(app.url("/revoke")).form(&[("token", access.as_str()), ("client_id", &f.client_id)]);
    assert_eq!(res.send().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 401);

    // client_credentials cannot get a token for userinfo.
    let (service, secret) = app.add_client(ClientSpec::service()).await;
    let form = [("grant_type", "client_credentials"), ("resource", userinfo.as_str())];
    let (status, _, body) = app.token(&form, Some((&service, secret.as_deref().unwrap()))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")), "{body}");
}

#[tokio::test]
async fn max_age_prompt_and_id_token_hint_decide_whether_to_sign_in_again() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    app.add_user("bob").await;
    let browser = Browser::new(&app);
    let url = |extra: &[(&str, &str)]| {
        let mut all = vec![("scope", "openid")];
        all.extend_from_slice(extra);
        authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &all)
    };
    // prompt=none without a session: login_required, back at the client.
    let q = query(&location(&browser.get(&url(&[("prompt", "none")])).await));
    assert_eq!((q["error"].as_str(), q["state"].as_str()), ("login_required", "xyz"));

    let (_, first) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let (_, id) = verify_id_token(&app, first["id_token"].as_str().unwrap(), &f.client_id).await;
    // A generous max_age: the session counts, no sign-in.
    assert!(query(&location(&browser.get(&url(&[("max_age", "3600")])).await)).contains_key("code"));
    // max_age=0 forces a sign-in (prompt=none then cannot proceed).
    let q = query(&location(&browser.get(&url(&[("max_age", "0"), ("prompt", "none")])).await));
    assert_eq!(q["error"], "login_required");
    let login = location(&browser.get(&url(&[("max_age", "0")])).await);
    assert!(login.starts_with(&app.url("/login")), "{login}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let callback = location(&browser.login(&login, "alice", PASSWORD).await);
    assert!(query(&callback).contains_key("code"), "{callback}");
    // select_account: the login page too.
    assert!(location(&browser.get(&url(&[("prompt", "select_account")])).await).starts_with(&app.url("/login")));

    // The new sign-in's auth_time is in the next ID token.
    let (_, later) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let (_, id2) = verify_id_token(&app, later["id_token"].as_str().unwrap(), &f.client_id).await;
    assert!(id2["auth_time"].as_i64() > id["auth_time"].as_i64(), "{} then {}", id["auth_time"], id2["auth_time"]);
    assert_ne!(id2["sid"], id["sid"], "a new sign-in is a new session");

    // id_token_hint: alice's own token lets prompt=none through; someone else's asks to sign in.
    let hint = later["id_token"].as_str().unwrap();
    let q = query(&location(&browser.get(&url(&[("prompt", "none"), ("id_token_hint", hint)])).await));
    assert!(q.contains_key("code"), "{q:?}");
    let other = Browser::new(&app);
    let (_, bobs) =
        sign_in(&app, &other, &Fixture { username: "bob".into(), ..f.clone() }, &[("scope", "openid")]).await;
    let q = query(&location(
        &browser.get(&url(&[("prompt", "none"), ("id_token_hint", bobs["id_token"].as_str().unwrap())])).await,
    ));
    assert_eq!(q["error"], "login_required");
    // A hint this server did not sign: invalid_request.
    let forged = tamper(hint);
    let q = query(&location(&browser.get(&url(&[("id_token_hint", &forged)])).await));
    assert_eq!(q["error"], "invalid_request");

    // A client's default_max_age of 0 asks every time.
    let strict = register(&app, json!({"default_max_age": 0})).await;
    let res = browser.get(&authorize_url(&app, &strict, REDIRECT, &pkce(), &[("scope", "openid")])).await;
    assert!(location(&res).starts_with(&app.url("/login")), "{}", location(&res));
}

#[tokio::test]
async fn each_id_token_carries_its_own_requests_nonce() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    // Two requests pending in one browser, finished in the opposite order.
    let (pa, pb) = (pkce(), pkce());
    let first = authorize_url(&app, &f.client_id, REDIRECT, &pa, &[("scope", "openid"), ("nonce", "nonce-A")]);
    let second = authorize_url(&app, &f.client_id, REDIRECT, &pb, &[("scope", "openid"), ("nonce", "nonce-B")]);
    let login_a = location(&browser.get(&first).await);
    let login_b = location(&browser.get(&second).await);
    let consent_b = location(&browser.login(&login_b, "alice", PASSWORD).await);
    let code_b = query(&location(&browser.consent(&consent_b, "allow").await))["code"].clone();
    // Request A's sign-in; its consent is remembered from B (an operator's client).
    let callback_a = location(&browser.login(&login_a, "alice", PASSWORD).await);
    assert!(callback_a.starts_with(REDIRECT), "{callback_a}");
    let code_a = query(&callback_a)["code"].clone();
    for (code, verifier, nonce) in [(code_a, pa.verifier, "nonce-A"), (code_b, pb.verifier, "nonce-B")] {
        let (status, _, body) = app.exchange(&code, Some(&verifier), REDIRECT, &f.client_id).await;
        assert_eq!(status, 200, "{body}");
        let (_, id) = verify_id_token(&app, body["id_token"].as_str().unwrap(), &f.client_id).await;
        assert_eq!(id["nonce"], nonce);
    }
}

#[tokio::test]
async fn openid_parameters_are_checked() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let refused = |extra: Vec<(&'static str, String)>| {
        let mut all: Vec<(&str, &str)> = vec![("scope", "openid")];
        all.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &all)
    };
    for (extra, error) in [
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.".to_owned())], "request_not_supported"),
        (vec![("request_uri", "https://rp.example/request.jwt".to_owned())], "request_uri_not_supported"),
        (vec![("claims", r#"{"userinfo":{"email":null}}"#.to_owned())], "invalid_request"),
        (vec![("nonce", "n".repeat(513))], "invalid_request"),
        (vec![("max_age", "-1".to_owned())], "invalid_request"),
        (vec![("max_age", "soon".to_owned())], "invalid_request"),
    ] {
        let q = query(&location(&browser.get(&refused(extra.clone())).await));
        assert_eq!(q.get("error").map(String::as_str), Some(error), "{extra:?}: {q:?}");
        assert_eq!(q["state"], "xyz");
    }
    // login_hint fills in the username; ui_locales, display and acr_values are accepted.
    let url = refused(vec![
        ("login_hint", "alice".into()),
        ("ui_locales", "fr-CA en".into()),
        ("display", "page".into()),
        ("acr_values", "urn:mace:incommon:iap:silver".into()),
    ]);
    let login = location(&browser.get(&url).await);
    let page = browser.get(&login).await.text().await.unwrap();
    assert!(page.contains(r#"name="username" value="alice""#), "{page}");
}

#[tokio::test]
async fn consent_names_the_openid_scopes_in_plain_words() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let client_id = register(&app, json!({})).await;
    let browser = Browser::new(&app);
    let url = authorize_url(&app, &client_id, REDIRECT, &pkce(), &[("scope", OPENID)]);
    let consent = location(&browser.login(&location(&browser.get(&url).await), &f.username, PASSWORD).await);
    let page = browser.get(&consent).await.text().await.unwrap();
    for words in ["your account id", "your username and your name", "your email address"] {
        assert!(page.contains(words), "{words} missing from the consent page");
    }
}

#[tokio::test]
async fn discovery_serves_one_document_at_both_well_known_paths() {
    for issuer_path in ["", "/tenant"] {
        let app = TestApp::spawn_with(Options { issuer_path: issuer_path.into(), ..Default::default() }).await;
        let oidc: Value = app.get("/.well-known/openid-configuration").await.json().await.unwrap();
        let inserted = format!("{}/.well-known/openid-configuration{issuer_path}", app.origin);
        let res = app.client.get(&inserted).send().await.unwrap();
        assert_eq!(res.status(), 200, "{inserted}");
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert_eq!(res.json::<Value>().await.unwrap(), oidc);
        let oauth: Value = app.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
        assert_eq!(oauth, oidc, "the RFC 8414 and OpenID documents are one");
        assert_eq!(oidc["issuer"], app.issuer);
        assert_eq!(oidc["userinfo_endpoint"], app.url("/userinfo"));
        assert_eq!(oidc["end_session_endpoint"], app.url("/logout"));
        assert_eq!(oidc["subject_types_supported"], json!(["public"]));
        assert_eq!(oidc["id_token_signing_alg_values_supported"], json!(["RS256", "ES256"]));
        assert_eq!(oidc["response_types_supported"], json!(["code"]));
        for claim in ["sub", "auth_time", "nonce", "name", "preferred_username", "email", "email_verified"] {
            assert!(oidc["claims_supported"].as_array().unwrap().contains(&json!(claim)), "{claim}");
        }
        for scope in ["openid", "profile", "email"] {
            assert!(oidc["scopes_supported"].as_array().unwrap().contains(&json!(scope)), "{scope}");
        }
        assert_eq!(oidc["request_parameter_supported"], false);
        assert_eq!(oidc["claims_parameter_supported"], false);
    }
}

#[tokio::test]
async fn rp_initiated_logout() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let out = "http://127.0.0.1/signed-out";
    let client_id = register(&app, json!({"post_logout_redirect_uris": [out]})).await;
    let f = fixture_for(&f, client_id);
    let browser = Browser::new(&app);
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let id_token = body["id_token"].as_str().unwrap();
    let logout = |params: &[(&str, &str)]| {
        let q = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        format!("{}?{q}", app.url("/logout"))
    };

    // Refused, as a page: an unregistered address, two different clients, an address without a client, a forged hint.
    let other = register(&app, json!({})).await;
    let forged = tamper(id_token);
    for (params, why) in [
        (vec![("id_token_hint", id_token), ("post_logout_redirect_uri", "http://127.0.0.1/elsewhere")], "registered"),
        (vec![("id_token_hint", id_token), ("client_id", other.as_str())], "two different"),
        (vec![("post_logout_redirect_uri", out)], "which application"),
        (vec![("id_token_hint", forged.as_str())], "did not issue"),
    ] {
        let res = browser.get(&logout(&params)).await;
        assert_eq!(res.status(), 400, "{params:?}");
        assert!(res.text().await.unwrap().contains(why), "{params:?}");
    }
    // Still signed in (a self-registered client always asks for consent).
    let still = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    assert_eq!(query(&location(&still))["error"], "consent_required", "the refusals ended nothing");

    // Without the ID token, the person confirms first.
    let res =
        browser.get(&logout(&[("client_id", &f.client_id), ("post_logout_redirect_uri", out), ("state", "s1")])).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Sign out?") && page.contains("OIDC App") && page.contains("alice"), "{page}");
    let csrf = crate::common::flow::hidden(&page, "csrf_token");
    let res = browser
        .post_form(
            "/logout",
            &[("csrf_token", &csrf), ("client_id", &f.client_id), ("post_logout_redirect_uri", out), ("state", "s1")],
        )
        .await;
    assert_eq!(location(&res), format!("{out}?state=s1"));
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    assert_eq!(query(&location(&res))["error"], "login_required", "the session ended");

    // With the user's ID token: at once, back to the application with its state.
    let (_, body) = sign_in(&app, &browser, &f, &[("scope", "openid")]).await;
    let hint = body["id_token"].as_str().unwrap();
    let res =
        browser.get(&logout(&[("id_token_hint", hint), ("post_logout_redirect_uri", out), ("state", "s2")])).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{out}?state=s2"));
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    assert_eq!(query(&location(&res))["error"], "login_required");
    // No session left: nothing to confirm, straight back (an expired hint is still a hint).
    let res = browser.get(&logout(&[("id_token_hint", hint), ("post_logout_redirect_uri", out)])).await;
    assert_eq!(location(&res), out);
    // Plain sign-out with no application: the page says so.
    let res = browser.get(&logout(&[])).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("You are signed out."));

    app.state.audit.shutdown().await;
    let ended: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'logout' AND detail = 'session ended'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(ended, 2);
}

#[tokio::test]
async fn registration_keeps_the_openid_metadata() {
    let app = TestApp::spawn().await;
    let doc = json!({
        "redirect_uris": ["https://app.example/cb"],
        "post_logout_redirect_uris": ["https://app.example/bye"],
        "id_token_signed_response_alg": "ES256",
        "default_max_age": 600,
        "require_auth_time": true
    });
    let res = app.client.post(app.url("/register")).json(&doc).send().await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    for member in ["post_logout_redirect_uris", "id_token_signed_response_alg", "default_max_age", "require_auth_time"]
    {
        assert_eq!(body[member], doc[member], "{member}");
    }
    let bad = json!({"redirect_uris": ["https://app.example/cb"], "id_token_signed_response_alg": "none"});
    let res = app.client.post(app.url("/register")).json(&bad).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_client_metadata");
}

#[tokio::test]
async fn the_cli_edits_profiles_and_openid_clients() {
    let app = TestApp::spawn().await;
    admin(
        &app.db,
        &["user", "add", "carol", "--email", "carol@example.com", "--name", "Carol", "--password-stdin"],
        "a long enough password\n",
    );
    let user = tessera::store::users::by_username(&app.db.pool, "carol").await.unwrap().unwrap();
    assert_eq!((user.name.as_deref(), user.email_verified), (Some("Carol"), false));
    let out = admin(&app.db, &["user", "edit", "carol", "--email-verified", "true", "--name", "Carol Danvers"], "");
    assert!(out.contains("Carol Danvers") && out.contains("verified"), "{out}");
    // A new email is unverified again; an empty name clears it.
    admin(&app.db, &["user", "edit", "carol", "--email", "c@example.org", "--name", ""], "");
    let user = tessera::store::users::by_username(&app.db.pool, "carol").await.unwrap().unwrap();
    assert_eq!((user.email.as_deref(), user.name, user.email_verified), (Some("c@example.org"), None, false));
    assert!(admin_fails(&app.db, &["user", "edit", "carol"]).contains("nothing to change"));
    assert!(admin_fails(&app.db, &["user", "edit", "carol", "--email", "nope"]).contains("--email"));

    let out = admin(
        &app.db,
        &[
            "client",
            "add",
            "--name",
            "Wiki",
            "--redirect-uri",
            "https://wiki.example/cb",
            "--post-logout-redirect-uri",
            "https://wiki.example/",
            "--id-token-alg",
            "es256",
        ],
        "",
    );
    let client_id = out.split_whitespace().nth(1).unwrap();
    let client = tessera::store::clients::get(&app.db.pool, client_id).await.unwrap().unwrap();
    assert_eq!(client.metadata["post_logout_redirect_uris"], json!(["https://wiki.example/"]));
    assert_eq!(client.metadata["id_token_signed_response_alg"], "ES256");
    assert!(
        admin_fails(&app.db, &["client", "add", "--name", "X", "--id-token-alg", "HS256"]).contains("--id-token-alg")
    );
}

#[tokio::test]
async fn rs256_keys_rotate_like_the_es256_ones() {
    let app = TestApp::spawn().await;
    let rs256 = tessera::tokens::keys::Alg::Rs256;
    let old = app.state.keys.signing_key_for(rs256).unwrap().kid.clone();
    let out = crate::common::tessera_bin()
        .args(["keys", "rotate", "--alg", "RS256", "--delay", "0s"])
        .env("DATABASE_URL", app.db.url())
        .env("TESSERA_MASTER_KEY", crate::common::test_master_key().to_base64())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(RS256)"));
    // Published and signing at once on this instance (LISTEN/NOTIFY); the old key stays published.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.state.keys.signing_key_for(rs256).unwrap().kid == old {
        assert!(tokio::time::Instant::now() < deadline, "the new RS256 key never took over");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let jwks: Value = app.get("/jwks.json").await.json().await.unwrap();
    let rsa: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kty"] == "RSA")
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(rsa.len(), 2, "{rsa:?}");
    assert!(rsa.contains(&old.as_str()));
    // An ID token signed with the new key verifies from the JWKS.
    let f = app.fixture().await;
    let (_, body) = sign_in(&app, &Browser::new(&app), &f, &[("scope", "openid")]).await;
    let (header, _) = verify_id_token(&app, body["id_token"].as_str().unwrap(), &f.client_id).await;
    assert_ne!(header.kid.as_deref(), Some(old.as_str()));
}
