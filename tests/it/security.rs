//! Findings of the black-box security review (issue 11), each kept from coming back: parallel
//! password guessing, credential changes that evict nobody, a database refusing connections, and
//! the answers hyper makes itself for over-long requests.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::flow::{Browser, PASSWORD, authorize_url, code_and_tokens, hidden, location, pkce, query};
use crate::common::{Options, TestApp, admin};

fn settings(pairs: &[(&'static str, &str)]) -> Options {
    Options { settings: pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), ..Default::default() }
}

/// `n` login attempts for `username(i)` with a wrong password, all at once from `source` (through
/// the trusted loopback proxy), spread over the given instances. The status of each.
async fn parallel_guesses(apps: &[&TestApp], n: usize, username: impl Fn(usize) -> String, source: &str) -> Vec<u16> {
    // One browser per instance, each with its CSRF token; every guess is a whole form POST.
    let mut forms = Vec::new();
    for app in apps {
        let browser = Browser::new(app);
        let page = browser.get(&app.url("/login")).await.text().await.unwrap();
        forms.push((browser.http.clone(), app.url("/login"), hidden(&page, "csrf_token")));
    }
    let guesses = (0..n).map(|i| {
        let (http, url, csrf) = forms[i % forms.len()].clone();
        let username = username(i);
        let source = source.to_owned();
        async move {
            http.post(url)
                .header("sec-fetch-site", "same-origin")
                .header("x-forwarded-for", source)
                .form(&[("username", username.as_str()), ("password", "wrong password"), ("csrf_token", &csrf)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    futures_util::future::join_all(guesses).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// How many passwords were checked: one `login.failure` audit record per argon2 verification
/// that failed (the audit writer is asynchronous, so wait for it to settle).
async fn failures_checked(app: &TestApp) -> i64 {
    let mut last = -1;
    for _ in 0..50 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'login.failure'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

fn throttle_settings() -> Options {
    settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "5"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ])
}

#[tokio::test]
async fn parallel_guesses_for_one_account_are_reserved_before_they_are_checked() {
    let app = TestApp::spawn_with(throttle_settings()).await;
    app.fixture().await;
    let statuses = parallel_guesses(&[&app], 50, |_| "alice".into(), "203.0.113.50").await;
    let (checked, refused) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + refused, 50, "only 401 and 429: {statuses:?}");
    assert!((1..=5).contains(&checked), "at most LOGIN_MAX_FAILURES guesses may be checked, {checked} were");
    assert_eq!(failures_checked(&app).await, checked as i64, "one argon2 verification per 401");
    // Lockout is no lever against the person: the right password from elsewhere still works.
    let browser = Browser::new(&app);
    let page = browser.get(&app.url("/login")).await.text().await.unwrap();
    let res = browser
        .http
        .post(app.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", "198.51.100.20")
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &hidden(&page, "csrf_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "signed in: on to the account page");
}

#[tokio::test]
async fn parallel_guesses_on_two_instances_share_one_reservation() {
    let a = TestApp::spawn_with(throttle_settings()).await;
    let b = TestApp::spawn_on(a.db.clone(), Options { issuer: Some(a.issuer.clone()), ..throttle_settings() }).await;
    a.fixture().await;
    let statuses = parallel_guesses(&[&a, &b], 50, |_| "alice".into(), "203.0.113.51").await;
    let checked = count(&statuses, 401);
    assert_eq!(checked + count(&statuses, 429), 50, "{statuses:?}");
    assert!((1..=5).contains(&checked), "two instances checked {checked} guesses together");
    assert_eq!(failures_checked(&a).await, checked as i64);
}

#[tokio::test]
async fn parallel_guesses_across_accounts_meet_the_source_limit() {
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "100"),
        ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "10"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ]))
    .await;
    app.fixture().await;
    let statuses = parallel_guesses(&[&app], 50, |i| format!("user{i}"), "203.0.113.52").await;
    let checked = count(&statuses, 401);
    assert_eq!(checked + count(&statuses, 429), 50, "{statuses:?}");
    assert!((1..=10).contains(&checked), "the source limit let {checked} guesses through");
}

#[tokio::test]
async fn refusals_of_a_blocked_account_do_not_count_against_its_source() {
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "2"),
        ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "50"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ]))
    .await;
    app.fixture().await;
    let source = "203.0.113.53";
    // Two failures block the pair (for a second); the guesses at once after it are refused.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.extend(parallel_guesses(&[&app], 1, |_| "alice".into(), source).await);
    }
    statuses.extend(parallel_guesses(&[&app], 20, |_| "alice".into(), source).await);
    let (checked, refused) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + refused, 22, "{statuses:?}");
    assert!(refused >= 1, "the pair was blocked: {statuses:?}");
    // The reservation counted each refused guess for the source, then gave it back.
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM login_sources WHERE source = $1::inet")
        .bind(source)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts as usize, checked, "only the {checked} checked guesses count against the source");
}

/// Sign in on `browser` with `password` (no authorization request); the status.
async fn sign_in(app: &TestApp, browser: &Browser<'_>, password: &str) -> StatusCode {
    let page = browser.get(&app.url("/login")).await.text().await.unwrap();
    let csrf = hidden(&page, "csrf_token");
    browser.post_form("/login", &[("username", "alice"), ("password", password), ("csrf_token", &csrf)]).await.status()
}

/// Where `/authorize` sends a browser that already has a session: to the login page, or
/// straight back to the client (a code, or an error).
async fn authorize_redirect(app: &TestApp, browser: &Browser<'_>, client_id: &str, extra: &[(&str, &str)]) -> String {
    let url = authorize_url(app, client_id, crate::common::flow::REDIRECT, &pkce(), extra);
    let res = browser.get(&url).await;
    assert_eq!(res.status(), 303);
    location(&res)
}

fn is_login_page(app: &TestApp, location: &str) -> bool {
    location.starts_with(&format!("{}/login", app.issuer))
}

async fn sessions_of(app: &TestApp, user: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(user)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn refresh(app: &TestApp, client_id: &str, token: &str) -> (StatusCode, Value) {
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client_id)], None).await;
    (status, body)
}

#[tokio::test]
async fn a_password_change_evicts_sessions_and_revokes_grants() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    // A signed-in browser (the "attacker") and a refresh token it obtained.
    let attacker = Browser::new(&app);
    assert_eq!(sign_in(&app, &attacker, PASSWORD).await, 303);
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let old_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let code = query(&authorize_redirect(&app, &attacker, &f.client_id, &[]).await).remove("code");
    assert!(code.is_some(), "the session issues codes before the change");
    assert_eq!(sessions_of(&app, f.user_id).await, 2, "both browsers' sessions name the user");
    // Keep a copy of the attacker's session row, to put it back after the change.
    let rows: Vec<(Vec<u8>, Value, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id_hash, data, expires_at FROM sessions WHERE user_id = $1")
            .bind(f.user_id)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();

    let out = admin(&app.db, &["user", "passwd", "alice", "--password-stdin"], "a brand new password\n");
    // Two grants: the client's, and the one behind the attacker's code.
    assert!(out.contains("2 sessions ended") && out.contains("2 grants revoked"), "{out}");

    let (status, body) = refresh(&app, &f.client_id, &old_refresh).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let next = authorize_redirect(&app, &attacker, &f.client_id, &[]).await;
    assert!(is_login_page(&app, &next), "an old session gets the login page, not a code: {next}");
    let next = authorize_redirect(&app, &attacker, &f.client_id, &[("prompt", "none")]).await;
    assert_eq!(query(&next).get("error").map(String::as_str), Some("login_required"), "{next}");
    assert_eq!(sessions_of(&app, f.user_id).await, 0);
    // A session row that escaped deletion (a login racing the change) is void all the same.
    for (id_hash, data, expires_at) in rows {
        sqlx::query("INSERT INTO sessions (id_hash, data, expires_at, user_id) VALUES ($1, $2, $3, $4)")
            .bind(id_hash)
            .bind(data)
            .bind(expires_at)
            .bind(f.user_id)
            .execute(&app.db.pool)
            .await
            .unwrap();
    }
    let next = authorize_redirect(&app, &attacker, &f.client_id, &[]).await;
    assert!(is_login_page(&app, &next), "a session from before the change was honoured: {next}");
    // The old password is refused, the new one works.
    let person = Browser::new(&app);
    assert_eq!(sign_in(&app, &person, PASSWORD).await, 401);
    assert_eq!(sign_in(&app, &person, "a brand new password").await, 303);
    let (detail,): (String,) =
        sqlx::query_as("SELECT detail FROM audit_events WHERE event = 'admin.user.password_changed'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(detail.contains("sessions ended") && detail.contains("grants revoked"), "{detail}");
}

#[tokio::test]
async fn keep_grants_keeps_refresh_tokens_but_not_sessions() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let browser = Browser::new(&app);
    assert_eq!(sign_in(&app, &browser, PASSWORD).await, 303);
    let out = admin(&app.db, &["user", "passwd", "alice", "--password-stdin", "--keep-grants"], "another password\n");
    assert!(out.contains("grants kept"), "{out}");
    let (status, body) = refresh(&app, &f.client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(is_login_page(&app, &authorize_redirect(&app, &browser, &f.client_id, &[]).await));
    let (detail,): (String,) =
        sqlx::query_as("SELECT detail FROM audit_events WHERE event = 'admin.user.password_changed'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(detail.contains("grants kept"), "{detail}");
}

#[tokio::test]
async fn disable_then_enable_does_not_bring_sessions_back() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    code_and_tokens(&app, &f, &[]).await; // approves the client, so a signed-in browser gets a code
    let browser = Browser::new(&app);
    assert_eq!(sign_in(&app, &browser, PASSWORD).await, 303);
    assert!(query(&authorize_redirect(&app, &browser, &f.client_id, &[]).await).contains_key("code"));
    let out = admin(&app.db, &["user", "disable", "alice"], "");
    assert!(out.contains("2 sessions ended"), "{out}"); // this browser and the one code_and_tokens used
    assert_eq!(sessions_of(&app, f.user_id).await, 0);
    admin(&app.db, &["user", "enable", "alice"], "");
    let next = authorize_redirect(&app, &browser, &f.client_id, &[]).await;
    assert!(is_login_page(&app, &next), "a session from before the disable came back: {next}");
    let next = authorize_redirect(&app, &browser, &f.client_id, &[("prompt", "none")]).await;
    assert_eq!(query(&next).get("error").map(String::as_str), Some("login_required"));
    // The account itself works again.
    assert_eq!(sign_in(&app, &browser, PASSWORD).await, 303);
}

#[tokio::test]
async fn a_database_refusing_connections_is_unavailable_everywhere() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    app.db.refuse_connections().await;
    // An unknown client must be looked up, so the lookup meets the refusal (SQLSTATE 55000).
    let revoke = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move { app.client.post(app.url("/revoke")).form(&form).send().await.unwrap() }
    };
    for form in [
        vec![("token", refresh_token.clone()), ("client_id", f.client_id.clone())],
        vec![("token", "x".to_owned()), ("client_id", "an-unknown-client".to_owned())],
    ] {
        let res = revoke(form).await;
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    let res = app
        .client
        .post(app.url("/introspect"))
        .basic_auth("rs_unknown", Some("secret"))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let (status, _, body) = app
        .token(
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh_token), ("client_id", "another-unknown")],
            None,
        )
        .await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (503, Some("temporarily_unavailable")));
    assert_eq!(app.client.get(format!("{}/readyz", app.origin)).send().await.unwrap().status(), 503);
}

/// Send raw bytes and read the whole answer (the server closes after these errors): the head in
/// lower case and the JSON body.
async fn raw_exchange(app: &TestApp, request: Vec<u8>) -> (String, Value) {
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer and close before reading everything: a failed write is fine.
        let _ = socket.write_all(&request);
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        (head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn over_long_urls_and_headers_get_the_usual_shape() {
    let app = TestApp::spawn().await;
    let long_query = format!("GET /authorize?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1_000_000));
    let long_target = format!("GET /?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    let big_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(500_000));
    let garbage = "NOT HTTP AT ALL\r\n\r\n".to_owned();
    // A request line longer than hyper's read buffer is answered 431 rather than 414
    // (hyperium/hyper#3874); the shape is what matters here.
    for (request, statuses) in [
        (long_query, &["414", "431"][..]),
        (long_target, &["414"][..]),
        (many_headers, &["431"][..]),
        (big_header, &["431"][..]),
        (garbage, &["400"][..]),
    ] {
        let (head, body) = raw_exchange(&app, request.into_bytes()).await;
        let status = &head[9..12];
        assert!(head.starts_with("http/1.1 ") && statuses.contains(&status), "{statuses:?}: {head}");
        for header in [
            "x-request-id: ",
            "content-type: application/json",
            "cache-control: no-store",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "content-security-policy: ",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(header), "{status}: no {header} in\n{head}");
        }
        assert_eq!(body["error"], json!("invalid_request"), "{status}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Our own answers on a keep-alive connection are untouched, errors included.
    let two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (head, _) = raw_exchange(&app, two.to_vec()).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (head, body) =
        raw_exchange(&app, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    assert!(head.starts_with("http/1.1 404") && head.contains("x-request-id"), "{head}");
    assert_eq!(body["error"], "not_found");
}
