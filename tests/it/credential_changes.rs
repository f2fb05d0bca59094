//! Credential changes by an administrator (`tessera user passwd`, `user disable`): the person's
//! sessions end, and stay void even if a row escapes deletion; their grants are revoked unless
//! `--keep-grants` keeps them; enabling the account again brings no session back.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::flow::{Browser, PASSWORD, authorize_url, code_and_tokens, hidden, location, pkce, query};
use crate::common::{TestApp, admin};

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
