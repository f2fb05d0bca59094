//! Two-step sign-in: an authenticator app (TOTP, RFC 6238) set up from `/account`, asked for after
//! the password, a code accepted once, ten recovery codes each accepted once, wrong codes
//! throttled like passwords, turned off behind the password, reset by an administrator. Codes are
//! computed here from the setup key the page shows, as an authenticator app does.

use reqwest::StatusCode;
use tessera::oauth::totp;

use crate::common::flow::{Browser, PASSWORD, authorize_url, hidden, location, pkce};
use crate::common::{Options, TestApp, admin};

pub(crate) fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base32") as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

fn now_step() -> i64 {
    totp::step_at(chrono::Utc::now().timestamp())
}

fn code(secret: &[u8], step: i64) -> String {
    format!("{:06}", totp::code_at(secret, step))
}

async fn sign_in(app: &TestApp, browser: &Browser<'_>) -> reqwest::Response {
    browser.login(&app.url("/login"), "alice", PASSWORD).await
}

async fn post(browser: &Browser<'_>, path: &str, csrf: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("csrf_token", csrf)];
    form.extend_from_slice(fields);
    browser.post_form(path, &form).await
}

/// Alice, signed in at `browser`, sets up an authenticator app: its secret, her recovery codes,
/// and the step of the code that turned it on.
async fn set_up(app: &TestApp, browser: &Browser<'_>) -> (Vec<u8>, Vec<String>, i64) {
    assert_eq!(sign_in(app, browser).await.status(), 303);
    let html = browser.get(&app.url("/account")).await.text().await.unwrap();
    assert!(html.contains("Set up an authenticator app"), "{html}");
    let csrf = hidden(&html, "csrf_token");
    let page = post(browser, "/account/totp/setup", &csrf, &[]).await.text().await.unwrap();
    let key = page.split("aria-label=\"Setup key\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let secret = base32_decode(&key);
    assert_eq!(secret.len(), 20, "a 160-bit secret");
    assert!(page.contains("otpauth://totp/Tessera%20127%2E0%2E0%2E1"), "{page}");
    // A code from too far ahead does not turn it on.
    let res = post(browser, "/account/totp/confirm", &csrf, &[("code", &code(&secret, now_step() + 5))]).await;
    assert_eq!(res.status(), 400);
    let step = now_step();
    let res = post(browser, "/account/totp/confirm", &csrf, &[("code", &code(&secret, step))]).await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    let codes: Vec<String> = page
        .split("<li>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .filter(|c| c.len() == 11 && c.as_bytes()[5] == b'-')
        .collect();
    assert_eq!(codes.len(), 10, "{page}");
    (secret, codes, step)
}

#[tokio::test]
async fn an_authenticator_app_is_asked_for_after_the_password_and_each_code_works_once() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (secret, _, used) = set_up(&app, &Browser::new(&app)).await;
    // The password alone is not a sign-in any more, also for an application's request.
    let browser = Browser::new(&app);
    let url = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read")]);
    let login = location(&browser.get(&url).await);
    let res = browser.login(&login, "alice", PASSWORD).await;
    assert_eq!(location(&res), app.url("/login/second-factor"));
    assert_eq!(location(&browser.get(&app.url("/account")).await), app.url("/login"), "not signed in yet");
    let page = browser.get(&app.url("/login/second-factor")).await.text().await.unwrap();
    assert!(page.contains("autocomplete=\"one-time-code\"") && page.contains("<label for=\"code\">"));
    let csrf = hidden(&page, "csrf_token");
    // The code that turned the app on was used: it does not work again (nor does a wrong one).
    let res = post(&browser, "/login/second-factor", &csrf, &[("code", &code(&secret, used))]).await;
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("used already"));
    // The app's next code does, once, and the authorization request goes on (consent).
    let next = code(&secret, used + 1);
    let res = post(&browser, "/login/second-factor", &csrf, &[("code", &next)]).await;
    assert_eq!(res.status(), 303);
    assert!(location(&res).starts_with(&app.url("/consent")), "{}", location(&res));
    assert_eq!(browser.get(&app.url("/account")).await.status(), 200, "signed in now");
    let other = Browser::new(&app);
    sign_in(&app, &other).await;
    let csrf = hidden(&other.get(&app.url("/login/second-factor")).await.text().await.unwrap(), "csrf_token");
    assert_eq!(post(&other, "/login/second-factor", &csrf, &[("code", &next)]).await.status(), 401, "replayed");
}

#[tokio::test]
async fn recovery_codes_work_once_and_wrong_codes_are_throttled() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let (_, codes, _) = set_up(&app, &Browser::new(&app)).await;
    let first = Browser::new(&app);
    sign_in(&app, &first).await;
    let csrf = hidden(&first.get(&app.url("/login/second-factor")).await.text().await.unwrap(), "csrf_token");
    let typed = codes[3].to_uppercase().replace('-', " ");
    let res = post(&first, "/login/second-factor", &csrf, &[("code", &typed)]).await;
    assert_eq!(location(&res), app.url("/account"), "a recovery code, as typed, signs in");
    let html = first.get(&app.url("/account")).await.text().await.unwrap();
    assert!(html.contains("9 recovery codes left"), "{html}");

    let second = Browser::new(&app);
    sign_in(&app, &second).await;
    let csrf = hidden(&second.get(&app.url("/login/second-factor")).await.text().await.unwrap(), "csrf_token");
    assert_eq!(post(&second, "/login/second-factor", &csrf, &[("code", &codes[3])]).await.status(), 401, "used");
    let mut statuses = Vec::new();
    for guess in ["111111", "222222", "333333", "444444", "555555", "666666"] {
        statuses.push(post(&second, "/login/second-factor", &csrf, &[("code", guess)]).await.status().as_u16());
    }
    // Five failures in all (the used recovery code was the first), then refused unchecked.
    assert_eq!(&statuses[..4], &[401; 4], "{statuses:?}");
    assert_eq!(statuses[4..], [429, 429], "{statuses:?}");
    let res = post(&second, "/login/second-factor", &csrf, &[("code", &codes[4])]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "even a good code waits out the block");
}

#[tokio::test]
async fn turning_it_off_needs_the_password_and_an_administrator_can_reset_it() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let browser = Browser::new(&app);
    set_up(&app, &browser).await;
    let html = browser.get(&app.url("/account")).await.text().await.unwrap();
    assert!(html.contains("10 recovery codes left"));
    let csrf = hidden(&html, "csrf_token");
    let res = post(&browser, "/account/totp/disable", &csrf, &[("current_password", "wrong")]).await;
    assert_eq!(res.status(), 401);
    let res = post(&browser, "/account/totp/disable", &csrf, &[("current_password", PASSWORD)]).await;
    assert_eq!(location(&res), format!("{}?done=totp-off", app.url("/account")));
    assert_eq!(location(&sign_in(&app, &Browser::new(&app)).await), app.url("/account"), "password alone again");

    set_up(&app, &Browser::new(&app)).await;
    assert_eq!(location(&sign_in(&app, &Browser::new(&app)).await), app.url("/login/second-factor"));
    let out = admin(&app.db, &["user", "reset-second-factors", "alice"], "");
    assert!(out.contains("removed the second factors of alice"), "{out}");
    assert_eq!(location(&sign_in(&app, &Browser::new(&app)).await), app.url("/account"));
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event FROM audit_events WHERE event LIKE '%totp%' OR event LIKE '%second_factor%'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(events.contains(&"admin.user.second_factors_reset".to_owned()), "{events:?}");
}

#[tokio::test]
async fn with_mfa_required_a_person_without_a_second_factor_may_only_set_one_up() {
    let app =
        TestApp::spawn_with(Options { settings: vec![("TESSERA_MFA", "required".into())], ..Default::default() }).await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let url = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read")]);
    let login = location(&browser.get(&url).await);
    let res = browser.login(&login, "alice", PASSWORD).await;
    assert_eq!(location(&res), format!("{}?done=mfa-required", app.url("/account")));
    let page = browser.get(&location(&res)).await.text().await.unwrap();
    assert!(page.contains("asks everyone for a second factor") && page.contains("Set up an authenticator app"));
    // No application gets anything from this session: /authorize sends it to the login page.
    assert!(location(&browser.get(&url).await).starts_with(&app.url("/login")), "not signed in for applications");
    // Nor does a new password make it whole.
    let form = [
        ("csrf_token", hidden(&page, "csrf_token")),
        ("current_password", PASSWORD.to_owned()),
        ("new_password", "another-long-password".to_owned()),
        ("confirm_password", "another-long-password".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(browser.post_form("/account/password", &form).await.status(), 303);
    assert!(location(&browser.get(&url).await).starts_with(&app.url("/login")), "still setup-only");
    let page = browser.get(&app.url("/account")).await.text().await.unwrap();
    // Setting up the app makes the session whole; the application's request then goes on.
    let csrf = hidden(&page, "csrf_token");
    let setup = post(&browser, "/account/totp/setup", &csrf, &[]).await.text().await.unwrap();
    let key = setup.split("aria-label=\"Setup key\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    let secret = base32_decode(&key);
    let res = post(&browser, "/account/totp/confirm", &csrf, &[("code", &code(&secret, now_step()))]).await;
    assert_eq!(res.status(), 200);
    let next = location(&browser.get(&url).await);
    assert!(next.starts_with(&app.url("/consent")), "signed in in full: {next}");
}

#[tokio::test]
async fn with_mfa_off_no_second_factor_is_asked_or_offered() {
    let db = crate::common::TestDb::new().await;
    let on = TestApp::spawn_on(db.clone(), Options::default()).await;
    on.fixture().await;
    set_up(&on, &Browser::new(&on)).await;
    let off =
        TestApp::spawn_on(db, Options { settings: vec![("TESSERA_MFA", "off".into())], ..Default::default() }).await;
    let browser = Browser::new(&off);
    let res = sign_in(&off, &browser).await;
    assert_eq!(location(&res), off.url("/account"), "the password alone");
    let html = browser.get(&off.url("/account")).await.text().await.unwrap();
    assert!(!html.contains("Two-step sign-in"), "not offered");
    let res = post(&browser, "/account/totp/setup", &hidden(&html, "csrf_token"), &[]).await;
    assert_eq!(res.status(), 403);
}
