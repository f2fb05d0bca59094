//! The authorization-code flow end to end, and every error path of /authorize and /token.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::TestApp;
use crate::common::flow::{
    Browser, ClientSpec, PASSWORD, REDIRECT, RESOURCE, authorize_url, code_and_tokens, hidden, location, pkce, query,
    verify_jwt,
};

/// Run authorize → login → consent and return the code and the PKCE verifier.
async fn get_code(app: &TestApp, client_id: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> (String, String) {
    let p = pkce();
    let callback = Browser::new(app).authorize(&authorize_url(app, client_id, redirect_uri, &p, extra), "alice").await;
    let q = query(&callback);
    (q["code"].clone(), p.verifier)
}

#[tokio::test]
async fn full_flow_with_refresh() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let p = pkce();
    // A native app on an ephemeral loopback port: registered without a port, matched on any.
    let redirect = "http://127.0.0.1:49152/callback";
    let url =
        authorize_url(&app, &f.client_id, redirect, &p, &[("scope", "tools:read tools:write"), ("resource", RESOURCE)]);

    let res = browser.get(&url).await;
    assert_eq!(res.status(), 303);
    let login_url = location(&res);
    assert!(login_url.starts_with(&app.url("/login?request=")), "{login_url}");
    let cookie_before =
        res.headers().get("set-cookie").map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
    let res = browser.login(&login_url, "alice", PASSWORD).await;
    assert_eq!(res.status(), 303);
    // The session id changes at login.
    let cookie_after =
        res.headers().get("set-cookie").map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned());
    assert!(cookie_after.is_some() && cookie_after != cookie_before, "{cookie_before:?} -> {cookie_after:?}");
    let consent_url = location(&res);
    assert!(consent_url.starts_with(&app.url("/consent?request=")), "{consent_url}");

    let page = browser.get(&consent_url).await.text().await.unwrap();
    assert!(page.contains("Test Client"));
    assert!(page.contains("127.0.0.1"), "redirect host shown");
    assert!(page.contains("Example MCP") && page.contains(RESOURCE));
    assert!(page.contains("tools:write") && page.contains("Run tools that change things"));
    assert!(page.contains("name=\"decision\" value=\"allow\"") && page.contains("name=\"decision\" value=\"deny\""));

    let res = browser.consent(&consent_url, "allow").await;
    assert_eq!(res.status(), 303);
    let callback = location(&res);
    assert!(callback.starts_with(redirect), "{callback}");
    let q = query(&callback);
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.issuer);

    let (status, headers, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", redirect),
                ("code_verifier", &p.verifier),
                ("client_id", &f.client_id),
                ("resource", RESOURCE),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "tools:read tools:write");
    let refresh = body["refresh_token"].as_str().expect("refresh token").to_owned();

    let claims = verify_jwt(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], app.issuer);
    assert_eq!(claims["aud"], RESOURCE, "aud is the one resource, as a string");
    assert_eq!(claims["sub"], f.user_id.to_string());
    assert_eq!(claims["client_id"], f.client_id);
    assert_eq!(claims["scope"], "tools:read tools:write");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(claims["gid"].as_str().is_some());

    // Refresh, narrowing the scope of the access token.
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &f.client_id),
                ("scope", "tools:read"),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "tools:read");
    let rotated = body["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, refresh, "refresh tokens rotate");
    let claims2 = verify_jwt(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims2["scope"], "tools:read");
    assert_eq!(claims2["gid"], claims["gid"]);
    assert_ne!(claims2["jti"], claims["jti"]);
}

#[tokio::test]
async fn consent_is_remembered_for_operator_clients_only() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    browser.authorize(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[]), "alice").await;
    // Same or fewer scopes: straight back with a code.
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(REDIRECT), "consent skipped: {}", location(&res));
    // More scopes: the consent page again.
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("scope", "tools:write")])).await;
    assert!(location(&res).starts_with(&app.url("/consent")));
    // prompt=consent: always the page.
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "consent")])).await;
    assert!(location(&res).starts_with(&app.url("/consent")));

    // A client that registered itself always sees the page, labelled unverified.
    let (dcr, _) = app.add_client(ClientSpec { origin: "dcr", name: "Self Registered", ..Default::default() }).await;
    browser.authorize(&authorize_url(&app, &dcr, REDIRECT, &pkce(), &[]), "alice").await;
    let res = browser.get(&authorize_url(&app, &dcr, REDIRECT, &pkce(), &[])).await;
    let consent = location(&res);
    assert!(consent.starts_with(&app.url("/consent")), "{consent}");
    let page = browser.get(&consent).await.text().await.unwrap();
    assert!(page.contains("unverified"));
    assert!(page.contains("on this computer (localhost)"), "localhost-only warning");
}

/// alice's password posted on the login page of the pending request `request`.
async fn post_login(browser: &Browser<'_>, csrf: &str, request: &str) -> reqwest::Response {
    let form = [("username", "alice"), ("password", PASSWORD), ("csrf_token", csrf), ("request", request)];
    browser.post_form("/login", &form).await
}

#[tokio::test]
async fn a_request_signed_in_for_is_used_once() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    // Approved before: the sign-in below goes straight back with a code.
    browser.authorize(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[]), "alice").await;
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "login")])).await;
    let login_url = location(&res);
    assert!(login_url.starts_with(&app.url("/login")), "{login_url}");
    let page = browser.get(&login_url).await.text().await.unwrap();
    let request = hidden(&page, "request");
    let grants = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM grants").fetch_one(&app.db.pool).await.unwrap();
        n
    };
    let first = post_login(&browser, &hidden(&page, "csrf_token"), &request).await;
    assert_eq!(first.status(), 303);
    assert!(query(&location(&first)).contains_key("code"), "{}", location(&first));
    let before = grants().await;
    // The same form again, with the signed-in session's new CSRF token: the request is used up.
    let fresh = browser.get(&app.url("/login")).await.text().await.unwrap();
    let again = post_login(&browser, &hidden(&fresh, "csrf_token"), &request).await;
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("expired or was already used"));
    assert_eq!(grants().await, before, "no second grant");
}

#[tokio::test]
async fn prompt_none_and_prompt_login() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    let q = query(&location(&res));
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.issuer);

    // Signed in, never consented.
    let login = location(&browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await);
    browser.login(&login, "alice", PASSWORD).await;
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    assert_eq!(query(&location(&res))["error"], "consent_required");

    // After consent, prompt=none returns a code silently.
    browser.authorize(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[]), "alice").await;
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "none")])).await;
    assert!(query(&location(&res)).contains_key("code"));

    // prompt=login shows the login page although signed in, then proceeds.
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[("prompt", "login")])).await;
    let login = location(&res);
    assert!(login.starts_with(&app.url("/login")));
    let res = browser.login(&login, "alice", PASSWORD).await;
    assert!(query(&location(&res)).contains_key("code"));
}

#[tokio::test]
async fn invalid_client_or_redirect_uri_shows_a_page_never_a_redirect() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (web, _) = app
        .add_client(ClientSpec { redirect_uris: vec!["https://app.example.com/callback".into()], ..Default::default() })
        .await;
    let near_misses = [
        "https://app.example.com/callback/",
        "https://APP.example.com/callback",
        "https://app.example.com/Callback",
        "https://app.example.com/callback/extra",
        "https://app.example.com/callback/%2e%2e/x",
        "https://app.example.com/%2E%2E/callback",
        "https://app.example.com@evil.example/callback",
        "https://app.example.com.evil.example/callback",
        "https://app-example.com/callback",
        "http://app.example.com/callback",
        "https://evil.example/callback",
    ];
    let browser = Browser::new(&app);
    for uri in near_misses {
        let res = browser.get(&authorize_url(&app, &web, uri, &pkce(), &[])).await;
        assert_eq!(res.status(), 400, "{uri}");
        assert!(res.headers().get("location").is_none(), "{uri} must not redirect");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let page = res.text().await.unwrap();
        assert!(page.contains("redirect_uri"), "{uri}: {page}");
        assert!(!page.contains("evil.example"), "the page does not echo the attacker URI");
    }
    // Unknown client with an attacker redirect.
    let res = browser.get(&authorize_url(&app, "no-such-client", "https://evil.example/cb", &pkce(), &[])).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
    assert!(res.text().await.unwrap().contains("not registered"));
    // Missing client_id, repeated client_id, repeated redirect_uri.
    for url in [
        app.url("/authorize?response_type=code"),
        format!("{}&client_id=other", authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])),
        format!(
            "{}&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcallback",
            authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])
        ),
    ] {
        let res = browser.get(&url).await;
        assert_eq!(res.status(), 400, "{url}");
        assert!(res.headers().get("location").is_none());
    }
    // With two registered redirect URIs, one must be named.
    let (two, _) = app
        .add_client(ClientSpec {
            redirect_uris: vec![REDIRECT.into(), "https://b.example/cb".into()],
            ..Default::default()
        })
        .await;
    let p = pkce();
    let url = app.url(&format!(
        "/authorize?response_type=code&client_id={two}&code_challenge={}&code_challenge_method=S256",
        p.challenge
    ));
    assert_eq!(browser.get(&url).await.status(), 400);
    // With one, it may be omitted; then the token request may omit it too.
    let url = app.url(&format!(
        "/authorize?response_type=code&client_id={}&code_challenge={}&code_challenge_method=S256",
        f.client_id, p.challenge
    ));
    let callback = browser.authorize(&url, "alice").await;
    assert!(callback.starts_with(REDIRECT));
    let code = query(&callback)["code"].clone();
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &p.verifier),
                ("client_id", &f.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The error an authorization request is redirected with.
async fn redirected_error(app: &TestApp, url: &str) -> std::collections::HashMap<String, String> {
    let res = Browser::new(app).get(url).await;
    assert_eq!(res.status(), 303, "{url}");
    let loc = location(&res);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query(&loc);
    assert_eq!(q["state"], "xyz", "{loc}");
    assert_eq!(q["iss"], app.issuer, "{loc}");
    assert!(q.contains_key("error_description"));
    q
}

#[tokio::test]
async fn authorization_errors_are_redirected() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let p = pkce();
    let base = |extra: &[(&str, &str)]| authorize_url(&app, &f.client_id, REDIRECT, &p, extra);
    let without = |drop: &str| {
        let url = base(&[]);
        let (path, q) = url.split_once('?').unwrap();
        let kept: Vec<&str> = q.split('&').filter(|kv| !kv.starts_with(&format!("{drop}="))).collect();
        format!("{path}?{}", kept.join("&"))
    };
    let cases: Vec<(String, &str)> = vec![
        (without("code_challenge"), "invalid_request"),
        (without("code_challenge_method"), "invalid_request"),
        (base(&[]).replace("code_challenge_method=S256", "code_challenge_method=plain"), "invalid_request"),
        (base(&[]).replace(&p.challenge, "too-short"), "invalid_request"),
        (without("response_type"), "invalid_request"),
        (base(&[]).replace("response_type=code", "response_type=token"), "unsupported_response_type"),
        (base(&[("resource", "https://unknown.example.com/mcp")]), "invalid_target"),
        (base(&[("resource", "https://mcp.example.com/mcp#frag")]), "invalid_target"),
        (base(&[("resource", RESOURCE), ("resource", RESOURCE)]), "invalid_request"),
        (base(&[("scope", "tools:read admin")]), "invalid_scope"),
        (base(&[("scope", "tools:read"), ("scope", "tools:write")]), "invalid_request"),
        (base(&[("prompt", "none login")]), "invalid_request"),
    ];
    for (url, error) in cases {
        let q = redirected_error(&app, &url).await;
        assert_eq!(q["error"], error, "{url}: {q:?}");
    }
    // A trailing slash, upper-case host and default port still name the registered resource.
    let res = Browser::new(&app).get(&base(&[("resource", "https://MCP.example.com:443/mcp/")])).await;
    assert!(location(&res).starts_with(&app.url("/login")), "{}", location(&res));
    // Unknown parameters are ignored.
    let res = Browser::new(&app).get(&base(&[("foo", "bar")])).await;
    assert!(location(&res).starts_with(&app.url("/login")));
}

#[tokio::test]
async fn no_resource_and_no_default_is_invalid_target() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, false).await;
    app.add_user("alice").await;
    let (client, _) = app.add_client(ClientSpec::default()).await;
    let q = redirected_error(&app, &authorize_url(&app, &client, REDIRECT, &pkce(), &[])).await;
    assert_eq!(q["error"], "invalid_target");
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await;
    let res = browser.login(&location(&res), "alice", PASSWORD).await;
    let consent_url = location(&res);
    let res = browser.consent(&consent_url, "deny").await;
    assert_eq!(res.status(), 303);
    let q = query(&location(&res));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.issuer);
    // The request is used up: approving afterwards does nothing.
    let page = browser.get(&consent_url).await;
    assert_eq!(page.status(), 400);
}

#[tokio::test]
async fn login_errors_look_the_same_and_forms_need_csrf_and_same_origin() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let login_url = location(&browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await);

    let wrong_password = browser.login(&login_url, "alice", "not the password").await;
    let status_a = wrong_password.status();
    let body_a = wrong_password.text().await.unwrap();
    let unknown_user = browser.login(&login_url, "mallory", "not the password").await;
    let status_b = unknown_user.status();
    let body_b = unknown_user.text().await.unwrap();
    assert_eq!(status_a, StatusCode::UNAUTHORIZED);
    assert_eq!(status_a, status_b);
    let message = |b: &str| b.lines().find(|l| l.contains("class=\"error\"")).map(str::to_owned);
    assert_eq!(message(&body_a), message(&body_b));
    assert!(message(&body_a).unwrap().contains("Incorrect username or password."));

    // No CSRF token.
    let page = browser.get(&login_url).await.text().await.unwrap();
    let request = hidden(&page, "request");
    let res =
        browser.post_form("/login", &[("username", "alice"), ("password", PASSWORD), ("request", &request)]).await;
    assert_eq!(res.status(), 403);
    // A cross-site POST with a valid token.
    let csrf = hidden(&browser.get(&login_url).await.text().await.unwrap(), "csrf_token");
    let form =
        [("username", "alice"), ("password", PASSWORD), ("request", request.as_str()), ("csrf_token", csrf.as_str())];
    let cases: [(Option<&str>, Option<&str>); 4] = [
        (Some("https://evil.example"), Some("cross-site")),
        (Some(app.origin.as_str()), Some("cross-site")),
        (None, Some("same-site")),
        (Some("https://evil.example"), None),
    ];
    for (origin, site) in cases {
        let mut req = browser.http.post(app.url("/login")).form(&form);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        assert_eq!(req.send().await.unwrap().status(), 403, "{origin:?} {site:?}");
    }
    // Consent needs the token too.
    let res = browser.post_form("/login", &form).await;
    let consent_url = location(&res);
    let res = browser.post_form("/consent", &[("request", &request), ("decision", "allow")]).await;
    assert_eq!(res.status(), 403);
    // A different browser cannot answer this consent.
    let other = Browser::new(&app);
    let res = other.get(&consent_url).await;
    assert_eq!(res.status(), 303, "not signed in there: sent to login");
}

#[tokio::test]
async fn disabled_users_cannot_sign_in() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    assert!(tessera::store::users::set_disabled(&app.db.pool, "alice", true).await.unwrap().is_some());
    let browser = Browser::new(&app);
    let login_url = location(&browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await);
    assert_eq!(browser.login(&login_url, "alice", PASSWORD).await.status(), 401);
}

#[tokio::test]
async fn code_is_single_use_and_replay_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("client_id", f.client_id.as_str()),
    ];
    let (status, _, first) = app.token(&form, None).await;
    assert_eq!(status, 200);
    let (status, _, second) = app.token(&form, None).await;
    assert_eq!(status, 400);
    assert_eq!(second["error"], "invalid_grant");
    // Everything issued from the first use is revoked: its refresh token no longer works.
    let refresh = first["refresh_token"].as_str().unwrap();
    let (status, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &f.client_id)], None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    let reason: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM grants").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(reason.as_deref(), Some("code_replay"));
}

#[tokio::test]
async fn code_exchange_errors() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (other, _) = app.add_client(ClientSpec::default()).await;

    // Wrong verifier: invalid_grant, and the code is spent.
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let bad = pkce().verifier;
    let (status, _, body) = app.exchange(&code, Some(&bad), REDIRECT, &f.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _, _) = app.exchange(&code, Some(&verifier), REDIRECT, &f.client_id).await;
    assert_eq!(status, 400);

    // Missing verifier.
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let (status, _, body) = app.exchange(&code, None, REDIRECT, &f.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));

    // Another client presenting the code: refused, and the code still works for its owner.
    let (status, _, body) = app.exchange(&code, Some(&verifier), REDIRECT, &other).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _, _) = app.exchange(&code, Some(&verifier), REDIRECT, &f.client_id).await;
    assert_eq!(status, 200);

    // Redirect URI mismatch at the token endpoint.
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let (status, _, body) = app.exchange(&code, Some(&verifier), "http://127.0.0.1/other", &f.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    // Expired code.
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    sqlx::query("UPDATE authorization_codes SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, _, body) = app.exchange(&code, Some(&verifier), REDIRECT, &f.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    // A resource other than the authorized one.
    app.add_resource("https://other.example.com/mcp", false).await;
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", &f.client_id),
                ("resource", "https://other.example.com/mcp"),
            ],
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));

    // Garbage code.
    let (status, _, body) = app.exchange("garbage", Some(&verifier), REDIRECT, &f.client_id).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

#[tokio::test]
async fn refresh_reuse_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let r1 = tokens["refresh_token"].as_str().unwrap();
    let refresh = |token: String| {
        let app = &app;
        let client = f.client_id.clone();
        async move {
            app.token(&[("grant_type", "refresh_token"), ("refresh_token", &token), ("client_id", &client)], None).await
        }
    };
    let (status, _, body) = refresh(r1.to_owned()).await;
    assert_eq!(status, 200);
    let r2 = body["refresh_token"].as_str().unwrap().to_owned();
    // r2 is used (so r1's reuse grace is over)...
    let (status, _, body) = refresh(r2).await;
    assert_eq!(status, 200);
    let r3 = body["refresh_token"].as_str().unwrap().to_owned();
    // ...then reusing r1 is refused, and the grant is revoked...
    let (status, _, body) = refresh(r1.to_owned()).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // ...so r3, never used, is dead too.
    let (status, _, body) = refresh(r3).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let reason: Option<String> =
        sqlx::query_scalar("SELECT revoked_reason FROM grants").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(reason.as_deref(), Some("refresh_reuse"));
}

#[tokio::test]
async fn refresh_errors() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (other, _) = app.add_client(ClientSpec::default()).await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    assert_eq!(tokens["scope"], "tools:read", "the default scopes");
    let r1 = tokens["refresh_token"].as_str().unwrap();

    // Wider scope: refused, token untouched.
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r1),
                ("client_id", &f.client_id),
                ("scope", "tools:read tools:write"),
            ],
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    // Another client's refresh token: refused, and the owner's token still works.
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", r1), ("client_id", &other)], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // A resource that is not the grant's.
    app.add_resource("https://other.example.com/mcp", false).await;
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r1),
                ("client_id", &f.client_id),
                ("resource", "https://other.example.com/mcp"),
            ],
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r1),
                ("client_id", &f.client_id),
                ("resource", "https://nowhere.example.com/"),
            ],
            None,
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
    // The matching resource works.
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r1),
                ("client_id", &f.client_id),
                ("resource", RESOURCE),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Expired refresh token.
    let r2 = body["refresh_token"].as_str().unwrap();
    sqlx::query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE rotated_at IS NULL")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", r2), ("client_id", &f.client_id)], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}

#[tokio::test]
async fn refresh_tokens_only_for_clients_that_may_refresh() {
    let app = TestApp::spawn().await;
    let mut f = app.fixture().await;
    let (no_refresh, _) =
        app.add_client(ClientSpec { grant_types: vec!["authorization_code"], ..Default::default() }).await;
    f.client_id = no_refresh;
    let tokens = code_and_tokens(&app, &f, &[("scope", "tools:read offline_access")]).await;
    assert!(tokens.get("refresh_token").is_none());
    assert_eq!(tokens["scope"], "offline_access tools:read");
}

#[tokio::test]
async fn client_authentication() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    app.add_user("alice").await;
    let (id, secret) = app.add_client(ClientSpec { confidential: true, ..Default::default() }).await;
    let secret = secret.unwrap();
    let f = crate::common::flow::Fixture {
        resource: RESOURCE.into(),
        client_id: id.clone(),
        secret: Some(secret.clone()),
        redirect_uri: REDIRECT.into(),
        username: "alice".into(),
        user_id: uuid::Uuid::nil(),
    };
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let form = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("code_verifier", verifier.clone()),
        ];
        v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
        v
    };
    fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        v.iter().map(|(k, val)| (*k, val.as_str())).collect()
    }

    // Wrong secret, unknown client, no authentication at all, public-style for a confidential client.
    for (form_extra, basic) in
        [(vec![], Some((id.as_str(), "wrong"))), (vec![], Some(("unknown", secret.as_str()))), (vec![], None)]
    {
        let f = form(&form_extra);
        let (status, headers, body) = app.token(&as_refs(&f), basic).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
        assert!(headers.get("www-authenticate").is_some());
    }
    let mut public_style = form(&[]);
    public_style.push(("client_id", id.clone()));
    let (status, _, body) = app.token(&as_refs(&public_style), None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // client_id in the body that differs from Basic.
    let mut mismatch = form(&[]);
    mismatch.push(("client_id", "someone-else".into()));
    let (status, _, _) = app.token(&as_refs(&mismatch), Some((&id, &secret))).await;
    assert_eq!(status, 400);
    // client_id in the body alongside Basic, same client: fine.
    let mut same = form(&[]);
    same.push(("client_id", id.clone()));
    let (status, _, body) = app.token(&as_refs(&same), Some((&id, &secret))).await;
    assert_eq!(status, 200, "{body}");

    // client_secret_post works too.
    let (code, verifier) = get_code(&app, &f.client_id, REDIRECT, &[]).await;
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &verifier),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn basic_credentials_are_url_decoded() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let (id, secret) = app.add_client(ClientSpec::service()).await;
    let secret = secret.unwrap();
    // Percent-encode every character of id and secret, as RFC 6749 §2.3.1 allows.
    let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let res = app
        .client
        .post(app.url("/token"))
        .basic_auth(enc(&id), Some(enc(&secret)))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn client_credentials() {
    let app = TestApp::spawn().await;
    let resource_id = app.add_resource(RESOURCE, false).await;
    app.add_resource("https://other.example.com/mcp", false).await;
    let (id, secret) = app
        .add_client(ClientSpec {
            confidential: true,
            redirect_uris: vec![],
            grant_types: vec!["client_credentials"],
            allowed_resources: vec![resource_id],
            ..Default::default()
        })
        .await;
    let secret = secret.unwrap();
    let (status, headers, body) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(body.get("refresh_token").is_none());
    assert_eq!(body["scope"], "tools:read");
    let claims = verify_jwt(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["client_id"], id);
    assert_eq!(claims["aud"], RESOURCE);
    // Scopes: a subset of the resource's; offline_access is meaningless here.
    let (status, _, body) =
        app.token(&[("grant_type", "client_credentials"), ("scope", "tools:write")], Some((&id, &secret))).await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "tools:write");
    for (scope, error) in [("admin", "invalid_scope"), ("offline_access", "invalid_scope")] {
        let (status, _, body) =
            app.token(&[("grant_type", "client_credentials"), ("scope", scope)], Some((&id, &secret))).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some(error)));
    }
    // A resource it is not allowed.
    let (status, _, body) = app
        .token(
            &[("grant_type", "client_credentials"), ("resource", "https://other.example.com/mcp")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_target")));
    // A client without the grant.
    let (plain, plain_secret) = app.add_client(ClientSpec { confidential: true, ..Default::default() }).await;
    let (status, _, body) =
        app.token(&[("grant_type", "client_credentials")], Some((&plain, &plain_secret.unwrap()))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
    // A public client cannot use it.
    let (public, _) =
        app.add_client(ClientSpec { grant_types: vec!["client_credentials"], ..Default::default() }).await;
    let (status, _, body) = app.token(&[("grant_type", "client_credentials"), ("client_id", &public)], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
}

#[tokio::test]
async fn token_endpoint_request_rules() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"] {
        let (status, _, body) = app
            .token(
                &[("grant_type", grant), ("username", "alice"), ("password", PASSWORD), ("client_id", &f.client_id)],
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("unsupported_grant_type")),
            "{grant}"
        );
    }
    let (status, _, body) = app.token(&[("client_id", &f.client_id)], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));
    // A repeated parameter.
    let res = app
        .client
        .post(app.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id={}", f.client_id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
    // JSON instead of a form.
    let res = app
        .client
        .post(app.url("/token"))
        .json(&serde_json::json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
    // GET is not allowed.
    assert_eq!(app.get("/token").await.status(), 405);
}

#[tokio::test]
async fn metadata_lists_the_new_endpoints_and_scopes() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let doc: Value = app.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert_eq!(doc["authorization_endpoint"], app.url("/authorize"));
    assert_eq!(doc["token_endpoint"], app.url("/token"));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(doc["response_modes_supported"], serde_json::json!(["query"]));
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["email", "offline_access", "openid", "profile", "tools:read", "tools:write"])
    );
}

#[tokio::test]
async fn secrets_are_stored_as_digests() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t::text, ' ') FROM (
            SELECT row_to_json(r)::text AS t FROM refresh_tokens r
            UNION ALL SELECT row_to_json(c)::text FROM authorization_codes c
            UNION ALL SELECT row_to_json(s)::text FROM sessions s
            UNION ALL SELECT row_to_json(u)::text FROM users u) x",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(!dump.contains(refresh));
    assert!(!dump.contains(PASSWORD));
    assert!(dump.contains("$argon2id$"));
}
