//! A real browser (headless Debian Chromium, driven over WebDriver by chromedriver) opens an
//! authorization URL, signs in, approves, and lands on the client's redirect URI.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::common::flow::{PASSWORD, authorize_url, pkce, query};
use crate::common::{TestApp, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, killed when dropped.
pub(crate) struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_driver() -> (Driver, u16) {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "browser tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (./test.sh and .ci/run install them)"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver");
    let driver = Driver(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (driver, port)
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> fantoccini::Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", format!("--user-data-dir={}", profile.display()), "--window-size=390,844",
            ],
        }),
    );
    // WebDriver on loopback: plain HTTP, no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("cannot open a Chromium session")
}

/// A fresh headless Chromium with its own profile, driven by its own chromedriver; all three
/// are gone when the first two are dropped.
pub(crate) async fn chromium() -> (Driver, tempfile::TempDir, fantoccini::Client) {
    let (driver, driver_port) = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let client = browser(driver_port, profile.path()).await;
    (driver, profile, client)
}

/// A loopback HTTP server standing in for the client's redirect URI.
pub(crate) async fn callback_server() -> (u16, tokio::sync::mpsc::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(uri.to_string()).await;
                "You can close this window."
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, rx)
}

pub(crate) async fn wait_for(c: &fantoccini::Client, selector: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(selector)).await {
        Ok(element) => element,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let source = c.source().await.unwrap_or_default();
            panic!("{selector} did not appear ({e}) on {url}:\n{source}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_and_approves() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (cb_port, mut callbacks) = callback_server().await;
    let (_driver, _profile, c) = chromium().await;

    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let p = pkce();
    let url = authorize_url(&app, &f.client_id, &redirect, &p, &[("scope", "tools:read tools:write")]);
    c.goto(&url).await.unwrap();

    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    // The stylesheet loaded under the CSP (no inline styles): the primary button is styled.
    let button = wait_for(&c, "button.primary").await;
    let color = button.css_value("background-color").await.unwrap();
    assert_ne!(color, "rgba(0, 0, 0, 0)", "stylesheet applied");
    button.click().await.unwrap();

    let allow = wait_for(&c, "button[name=decision][value=allow]").await;
    let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("Test Client") && text.contains("tools:write"), "{text}");
    allow.click().await.unwrap();

    let landed = tokio::time::timeout(Duration::from_secs(15), callbacks.recv()).await.expect("no callback").unwrap();
    let q = query(&format!("http://127.0.0.1{landed}"));
    assert!(q.get("code").is_some_and(|c| c.len() == 43), "{landed}");
    assert_eq!(q["state"], "xyz");
    assert_eq!(q["iss"], app.issuer);
    let current = c.current_url().await.unwrap();
    assert!(current.as_str().starts_with(&redirect), "{current}");
    c.close().await.unwrap();

    // The code the browser carried works at the token endpoint.
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", &redirect),
                ("code_verifier", &p.verifier),
                ("client_id", &f.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Wait (bounded) until the browser is on a page whose URL starts with `prefix`.
pub(crate) async fn wait_for_url(c: &fantoccini::Client, prefix: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        if url.starts_with(prefix) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still on {url}, waiting for {prefix}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Press one key in the page (WebDriver key actions: the keyboard, not a script).
async fn press(c: &fantoccini::Client, key: fantoccini::key::Key) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let value = key.chars().next().unwrap();
    let keys = KeyActions::new("keyboard".into()).then(KeyAction::Down { value }).then(KeyAction::Up { value });
    c.perform_actions(keys).await.unwrap();
}

/// Inputs a person can see that no label names (nor an aria-label).
async fn unlabelled_inputs(c: &fantoccini::Client) -> Vec<String> {
    let script = "return [...document.querySelectorAll('input:not([type=hidden]):not([hidden])')]
        .filter(i => !(i.labels && i.labels.length) && !i.getAttribute('aria-label'))
        .map(i => i.name || i.id);";
    serde_json::from_value(c.execute(script, vec![]).await.unwrap()).unwrap()
}

/// Screenshots of the current page at a phone's and a desktop's width, written where the test
/// output says; the page must not scroll sideways at either.
async fn screenshots(c: &fantoccini::Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for width in [360, 1280] {
        c.set_window_size(width, 900).await.unwrap();
        let overflow = c
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
            .await
            .unwrap();
        assert!(overflow.as_i64().unwrap_or(1) <= 0, "{name} scrolls sideways at {width}px by {overflow}px");
        let path = dir.join(format!("{name}-{width}.png"));
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
        println!("screenshot: {}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_disconnects_an_application_from_the_account_page_with_the_keyboard() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (cb_port, mut callbacks) = callback_server().await;
    let (_driver, _profile, c) = chromium().await;
    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let p = pkce();
    let extra = [("scope", "tools:read tools:write offline_access")];
    c.goto(&authorize_url(&app, &f.client_id, &redirect, &p, &extra)).await.unwrap();
    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "button.primary").await.click().await.unwrap();
    // Consent: a labelled checkbox per scope; leave tools:write unchecked.
    let allow = wait_for(&c, "button[name=decision][value=allow]").await;
    assert!(unlabelled_inputs(&c).await.is_empty(), "consent: {:?}", unlabelled_inputs(&c).await);
    screenshots(&c, "consent").await;
    let write = c.find(Locator::Css("input[name='scope:tools:write']")).await.unwrap();
    let id = write.attr("id").await.unwrap().unwrap();
    c.find(Locator::Css(&format!("label[for='{id}']"))).await.unwrap().click().await.unwrap();
    assert!(!write.is_selected().await.unwrap(), "clicking the label unchecks the box");
    allow.click().await.unwrap();
    let landed = tokio::time::timeout(Duration::from_secs(15), callbacks.recv()).await.expect("no callback").unwrap();
    let code = query(&format!("http://127.0.0.1{landed}")).remove("code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", p.verifier.as_str()),
        ("client_id", f.client_id.as_str()),
    ];
    let (status, _, body) = app.token(&form, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "offline_access tools:read", "the unchecked scope was not granted");
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();

    // The account page lists the application; Tab to its Disconnect button, press Enter.
    c.goto(&app.url("/account")).await.unwrap();
    let text = wait_for(&c, "main").await.text().await.unwrap();
    assert!(text.contains("Test Client") && text.contains("tools:read") && !text.contains("tools:write"), "{text}");
    assert!(unlabelled_inputs(&c).await.is_empty(), "account: {:?}", unlabelled_inputs(&c).await);
    screenshots(&c, "account").await;
    let focused_label =
        "return document.activeElement ? (document.activeElement.getAttribute('aria-label') || '') : '';";
    let mut reached = false;
    for _ in 0..30 {
        press(&c, fantoccini::key::Key::Tab).await;
        let label = c.execute(focused_label, vec![]).await.unwrap();
        if label.as_str().is_some_and(|l| l.starts_with("Disconnect Test Client")) {
            reached = true;
            break;
        }
    }
    assert!(reached, "the Disconnect button is reachable with Tab");
    press(&c, fantoccini::key::Key::Enter).await;
    let notice = wait_for(&c, "p.notice").await.text().await.unwrap();
    assert!(notice.contains("disconnected"), "{notice}");
    c.close().await.unwrap();
    let (status, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh_token), ("client_id", &f.client_id)], None)
        .await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")), "the client's refresh fails");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sets_up_an_authenticator_app_and_signs_in_with_its_codes() {
    use tessera::oauth::totp;
    let app = TestApp::spawn().await;
    app.fixture().await;
    let (_driver, _profile, c) = chromium().await;
    c.goto(&app.url("/login")).await.unwrap();
    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "button.primary").await.click().await.unwrap();
    wait_for(&c, "form[action$='/account/totp/setup'] button").await.click().await.unwrap();
    // The setup page: the key to type into the app, and where to type the app's code.
    let key = wait_for(&c, "p.secret").await.text().await.unwrap();
    assert!(unlabelled_inputs(&c).await.is_empty());
    screenshots(&c, "totp-setup").await;
    let secret = crate::second_factor::base32_decode(&key);
    let step = totp::step_at(chrono::Utc::now().timestamp());
    wait_for(&c, "input#code").await.send_keys(&format!("{:06}", totp::code_at(&secret, step))).await.unwrap();
    wait_for(&c, "button.primary").await.click().await.unwrap();
    let codes = wait_for(&c, "ul.codes").await.text().await.unwrap();
    assert_eq!(codes.lines().filter(|l| l.len() == 11).count(), 10, "{codes}");
    screenshots(&c, "recovery-codes").await;
    c.close().await.unwrap();

    // Another browser: the password, then the app's next code.
    let (_driver2, _profile2, c) = chromium().await;
    c.goto(&app.url("/login")).await.unwrap();
    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "button.primary").await.click().await.unwrap();
    let input = wait_for(&c, "input#code").await;
    assert!(unlabelled_inputs(&c).await.is_empty());
    screenshots(&c, "second-factor").await;
    input.send_keys(&format!("{:06}", totp::code_at(&secret, step + 1))).await.unwrap();
    press(&c, fantoccini::key::Key::Enter).await;
    let text = wait_for(&c, "section[aria-labelledby=two-step]").await.text().await.unwrap();
    assert!(text.contains("10 recovery codes left"), "signed in with the app, no recovery code used: {text}");
    assert!(c.current_url().await.unwrap().as_str().ends_with("/account"));
    c.close().await.unwrap();
}

/// WebDriver's virtual authenticator (WebAuthn Level 2 §11): a CTAP2 platform authenticator that
/// keeps discoverable credentials and verifies the user, added to the browser session.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/webauthn/authenticator", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = serde_json::json!({
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
            "hasUserVerification": true, "isUserVerified": true,
        });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// Sign out through the confirmation page, and wait until it says so.
async fn sign_out(c: &fantoccini::Client, app: &TestApp) {
    c.goto(&app.url("/logout")).await.unwrap();
    wait_for(c, "form[action$='/logout'] button.primary").await.click().await.unwrap();
    let said = c.wait().at_most(Duration::from_secs(15)).for_element(Locator::XPath("//h1[text()='Signed out']")).await;
    assert!(said.is_ok(), "the sign-out page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_adds_a_passkey_then_signs_in_with_it_alone_and_as_a_second_factor() {
    let options = crate::common::Options { localhost: true, ..Default::default() };
    let app = TestApp::spawn_with(options).await;
    let f = app.fixture().await;
    let (_driver, _profile, c) = chromium().await;
    c.issue_cmd(AddVirtualAuthenticator).await.expect("chromedriver adds a virtual authenticator");
    // Signed in with the password, add a passkey on the account page.
    c.goto(&app.url("/login")).await.unwrap();
    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "form[action$='/login'] button.primary").await.click().await.unwrap();
    let name = wait_for(&c, "input#passkey_name").await;
    assert!(unlabelled_inputs(&c).await.is_empty());
    name.clear().await.unwrap();
    name.send_keys("Laptop").await.unwrap();
    wait_for(&c, "form[data-passkey=create] button").await.click().await.unwrap();
    let notice = wait_for(&c, "p.notice").await.text().await.unwrap();
    assert!(notice.contains("passkey was added"), "{notice}");
    let text = wait_for(&c, "section[aria-labelledby=passkeys]").await.text().await.unwrap();
    assert!(text.contains("Laptop"), "{text}");
    screenshots(&c, "account-passkeys").await;
    let user_id = f.user_id;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM passkeys WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);

    // Sign out (the confirmation page), then an application's request: the passkey alone.
    sign_out(&c, &app).await;
    let (cb_port, mut callbacks) = callback_server().await;
    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    c.goto(&authorize_url(&app, &f.client_id, &redirect, &pkce(), &[("scope", "tools:read")])).await.unwrap();
    wait_for(&c, "form[data-passkey=get] button").await.click().await.unwrap();
    let allow = wait_for(&c, "button[name=decision][value=allow]").await;
    let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("alice"), "signed in as alice with the passkey alone: {text}");
    allow.click().await.unwrap();
    let landed = tokio::time::timeout(Duration::from_secs(15), callbacks.recv()).await.expect("no callback").unwrap();
    assert!(landed.contains("code="), "{landed}");

    // With a passkey, the password is no longer enough: the passkey is the second factor.
    sign_out(&c, &app).await;
    c.goto(&app.url("/login")).await.unwrap();
    wait_for(&c, "input#username").await.send_keys("alice").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "form[action$='/login'] button.primary").await.click().await.unwrap();
    // (The login page has a passkey button too: wait for the second-factor page's own.)
    let second = "form[action$='/login/second-factor/passkey'] button";
    wait_for(&c, second).await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/login/second-factor"));
    screenshots(&c, "second-factor-passkey").await;
    wait_for(&c, second).await.click().await.unwrap();
    wait_for(&c, "section[aria-labelledby=passkeys]").await;
    assert!(c.current_url().await.unwrap().as_str().ends_with("/account"));
    c.close().await.unwrap();
    let events: Vec<String> = sqlx::query_scalar("SELECT event FROM audit_events WHERE event LIKE '%passkey%'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(
        events.contains(&"account.passkey_added".to_owned()) && events.contains(&"login.passkey".to_owned()),
        "{events:?}"
    );
}
