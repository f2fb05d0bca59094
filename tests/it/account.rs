//! `/account`: the person's connected applications (Disconnect revokes), their sessions (end one
//! or all others), their password (the current one first; other sessions end) — each behind
//! the session's CSRF token and the same-site check, each audited.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::TestApp;
use crate::common::flow::{Browser, ClientSpec, Fixture, PASSWORD, authorize_url, hidden, location, pkce, query};

/// Sign `browser` in as `username` without an application: it lands on `/account`.
async fn sign_in(app: &TestApp, browser: &Browser<'_>, username: &str, password: &str) -> reqwest::Response {
    browser.login(&app.url("/login"), username, password).await
}

async fn account_page(app: &TestApp, browser: &Browser<'_>) -> (StatusCode, String) {
    let res = browser.get(&app.url("/account")).await;
    (res.status(), res.text().await.unwrap())
}

/// The whole flow in `browser` (signed in or not) and the code exchanged: the token response.
async fn connect(app: &TestApp, browser: &Browser<'_>, f: &Fixture, client_id: &str) -> Value {
    let p = pkce();
    let extra = [("scope", "tools:read offline_access")];
    let callback = browser.authorize(&authorize_url(app, client_id, &f.redirect_uri, &p, &extra), &f.username).await;
    let code = query(&callback).remove("code").expect("a code");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", f.redirect_uri.as_str()),
        ("code_verifier", p.verifier.as_str()),
        ("client_id", client_id),
    ];
    let (status, _, body) = app.token(&form, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn refresh(app: &TestApp, client_id: &str, token: &str) -> (StatusCode, Value) {
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client_id)], None).await;
    (status, body)
}

/// The values of every hidden field `name` on a page, in order.
fn all_hidden(html: &str, name: &str) -> Vec<String> {
    let needle = format!("name=\"{name}\" value=\"");
    html.match_indices(&needle)
        .map(|(i, _)| {
            let rest = &html[i + needle.len()..];
            rest[..rest.find('"').unwrap()].to_owned()
        })
        .collect()
}

async fn audited(app: &TestApp, event: &str) -> Vec<String> {
    for _ in 0..50 {
        let rows: Vec<(Option<String>,)> = sqlx::query_as("SELECT detail FROM audit_events WHERE event = $1")
            .bind(event)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
        if !rows.is_empty() {
            return rows.into_iter().map(|r| r.0.unwrap_or_default()).collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    vec![]
}

#[tokio::test]
async fn a_browser_that_is_not_signed_in_goes_to_the_login_page_and_comes_back() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&app.url("/account")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), app.url("/login"));
    let res = sign_in(&app, &browser, "alice", PASSWORD).await;
    assert_eq!(res.status(), 303, "a sign-in for no application lands on the account page");
    assert_eq!(location(&res), app.url("/account"));
    let (status, html) = account_page(&app, &browser).await;
    assert_eq!(status, 200);
    assert!(html.contains("Signed in as <strong>alice</strong>"), "{html}");
    assert!(html.contains("No application has access"), "{html}");
    assert!(html.contains("This browser"));
}

#[tokio::test]
async fn disconnect_revokes_the_grant_and_forgets_the_approval() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let tokens = connect(&app, &browser, &f, &f.client_id).await;
    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();
    // Bob connected the same application: alice's Disconnect must not touch his grant.
    app.add_user("bob").await;
    let bob = Browser::new(&app);
    let bob_tokens = connect(&app, &bob, &Fixture { username: "bob".into(), ..f.clone() }, &f.client_id).await;

    let (status, html) = account_page(&app, &browser).await;
    assert_eq!(status, 200);
    assert!(html.contains("Test Client") && html.contains("tools:read") && html.contains(&f.resource), "{html}");
    assert!(html.contains("First approved") && html.contains("Last used"));
    let (status, body) = refresh(&app, &f.client_id, &refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();

    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("client_id", hidden(&html, "client_id")),
        ("resource_id", hidden(&html, "resource_id")),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Without the CSRF token, or from another site: refused, nothing revoked.
    assert_eq!(browser.post_form("/account/disconnect", &form[1..]).await.status(), 403);
    let cross = browser
        .http
        .post(app.url("/account/disconnect"))
        .header("sec-fetch-site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    // A stranger's browser (no session) cannot use the form either.
    assert_eq!(Browser::new(&app).post_form("/account/disconnect", &form).await.status(), 403);
    let (status, body) = refresh(&app, &f.client_id, &refresh_token).await;
    assert_eq!(status, 200, "nothing was revoked by the refused forms");
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();

    let res = browser.post_form("/account/disconnect", &form).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{}?done=disconnected", app.url("/account")));
    let (status, body) = refresh(&app, &f.client_id, &refresh_token).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let html = browser.get(&location(&res)).await.text().await.unwrap();
    assert!(html.contains("was disconnected") && html.contains("No application has access"), "{html}");
    // Bob's grant stands.
    let (status, _) = refresh(&app, &f.client_id, bob_tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "another person's grant is untouched");
    // The approval is forgotten: the application must ask again.
    let url = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read")]);
    let next = location(&browser.get(&url).await);
    assert!(next.starts_with(&app.url("/consent")), "consent asked again: {next}");
    let details = audited(&app, "account.app_disconnected").await;
    assert!(details.iter().any(|d| d.contains("1 grants revoked")), "{details:?}");
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_by_one_or_all_others() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let here = Browser::new(&app);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .user_agent("Laptop/1.0 (test)")
        .build()
        .unwrap();
    let laptop = Browser { app: &app, http };
    let phone = Browser::new(&app);
    for b in [&here, &laptop, &phone] {
        assert_eq!(sign_in(&app, b, "alice", PASSWORD).await.status(), 303);
    }
    let (_, html) = account_page(&app, &here).await;
    assert_eq!(html.matches("Another browser").count(), 2, "{html}");
    assert!(html.contains("Laptop/1.0 (test)") && html.contains("127.0.0.1"), "{html}");
    let sids = all_hidden(&html, "sid");
    assert_eq!(sids.len(), 2, "an End button for each other session only");
    let csrf = hidden(&html, "csrf_token");
    // End the laptop's session: it is signed out at its next request.
    let (_, laptop_html) = account_page(&app, &laptop).await;
    let laptop_sid = sids.iter().find(|s| !laptop_html.contains(&format!("value=\"{s}\""))).unwrap().clone();
    let res = here.post_form("/account/sessions/end", &[("csrf_token", &csrf), ("sid", &laptop_sid)]).await;
    assert_eq!(res.status(), 303);
    assert_eq!(account_page(&app, &laptop).await.0, 303, "the laptop is signed out");
    assert_eq!(account_page(&app, &phone).await.0, 200, "the phone is not");
    // Ending it again, or this browser's own session through this form: refused.
    let res = here.post_form("/account/sessions/end", &[("csrf_token", &csrf), ("sid", &laptop_sid)]).await;
    assert_eq!(res.status(), 400);
    // All others: the phone goes, this browser stays.
    let res = here.post_form("/account/sessions/end", &[("csrf_token", &csrf), ("others", "all")]).await;
    assert_eq!(location(&res), format!("{}?done=sessions", app.url("/account")));
    assert_eq!(account_page(&app, &phone).await.0, 303);
    let (status, html) = account_page(&app, &here).await;
    assert_eq!(status, 200);
    assert!(!html.contains("Another browser"), "{html}");
    assert!(audited(&app, "account.session_ended").await.len() == 1);
    assert!(audited(&app, "account.sessions_ended").await[0].contains("1 other sessions"));
}

#[tokio::test]
async fn a_password_change_needs_the_current_password_and_ends_the_other_sessions() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let here = Browser::new(&app);
    let other = Browser::new(&app);
    assert_eq!(sign_in(&app, &other, "alice", PASSWORD).await.status(), 303);
    let kept = connect(&app, &here, &f, &f.client_id).await;
    let (_, html) = account_page(&app, &here).await;
    let csrf = hidden(&html, "csrf_token");
    let change = |current: &'static str, new: &'static str, confirm: &'static str, disconnect: bool| {
        let csrf = csrf.clone();
        let here = &here;
        async move {
            let mut form = vec![
                ("csrf_token", csrf.clone()),
                ("current_password", current.to_owned()),
                ("new_password", new.to_owned()),
                ("confirm_password", confirm.to_owned()),
            ];
            if disconnect {
                form.push(("disconnect_apps", "yes".into()));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            here.post_form("/account/password", &form).await
        }
    };
    let res = change("not-the-password", "a-new-long-password", "a-new-long-password", false).await;
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("current password is not correct"));
    let res = change(PASSWORD, "a-new-long-password", "another-long-password", false).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("differ"));
    let res = change(PASSWORD, "short", "short", false).await;
    assert_eq!(res.status(), 400);
    // Grants kept (the box unticked): the application keeps working; the other browser is out.
    let res = change(PASSWORD, "a-new-long-password", "a-new-long-password", false).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), format!("{}?done=password", app.url("/account")));
    assert_eq!(account_page(&app, &other).await.0, 303, "the other browser is signed out");
    let page = here.get(&location(&res)).await;
    assert_eq!(page.status(), 200, "this browser stays signed in");
    assert!(page.text().await.unwrap().contains("Your password was changed"));
    let (status, _) = refresh(&app, &f.client_id, kept["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "grants kept when asked");
    assert_eq!(sign_in(&app, &Browser::new(&app), "alice", PASSWORD).await.status(), 401, "old password dead");
    assert_eq!(sign_in(&app, &Browser::new(&app), "alice", "a-new-long-password").await.status(), 303);

    // Again, disconnecting every application this time.
    let tokens = connect(&app, &here, &f, &f.client_id).await;
    let (_, html) = account_page(&app, &here).await;
    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("current_password", "a-new-long-password".to_owned()),
        ("new_password", "a-third-long-password".to_owned()),
        ("confirm_password", "a-third-long-password".to_owned()),
        ("disconnect_apps", "yes".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(here.post_form("/account/password", &form).await.status(), 303);
    let (status, _) = refresh(&app, &f.client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "every grant revoked");
    let details = audited(&app, "account.password_changed").await;
    assert!(details.iter().any(|d| d.contains("grants kept")) && details.iter().any(|d| d.contains("grants revoked")));
    assert!(!audited(&app, "account.reauthenticated").await.is_empty());
}

#[tokio::test]
async fn wrong_current_passwords_are_throttled_like_sign_ins() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let here = Browser::new(&app);
    assert_eq!(sign_in(&app, &here, "alice", PASSWORD).await.status(), 303);
    let (_, html) = account_page(&app, &here).await;
    let csrf = hidden(&html, "csrf_token");
    let form = [
        ("csrf_token", csrf.as_str()),
        ("current_password", "wrong-guess"),
        ("new_password", "a-new-long-password"),
        ("confirm_password", "a-new-long-password"),
    ];
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(here.post_form("/account/password", &form).await.status().as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
}

#[tokio::test]
async fn an_unverified_application_is_marked_on_the_account_page() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let spec = ClientSpec { name: "Self Registered", origin: "dcr", ..Default::default() };
    let (client_id, _) = app.add_client(spec).await;
    let browser = Browser::new(&app);
    connect(&app, &browser, &f, &client_id).await;
    let (_, html) = account_page(&app, &browser).await;
    assert!(html.contains("Self Registered") && html.contains("badge\">unverified"), "{html}");
}
