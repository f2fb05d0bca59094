//! Passkeys over plain HTTP (the ceremonies themselves run in Chromium with a virtual
//! authenticator: `browser::chromium_adds_a_passkey_...`): where they are offered, the CSP that
//! lets exactly one script run, and what a forged or out-of-order answer gets.

use crate::common::flow::{Browser, PASSWORD, hidden};
use crate::common::{Options, TestApp};

fn csp(res: &reqwest::Response) -> String {
    res.headers()["content-security-policy"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn passkeys_are_offered_on_a_domain_issuer_with_one_script_allowed() {
    let app = TestApp::spawn_with(Options { localhost: true, ..Default::default() }).await;
    app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&app.url("/login")).await;
    let policy = csp(&res);
    assert!(policy.contains(&format!("script-src {}", app.url("/static/webauthn.js"))), "{policy}");
    assert!(policy.contains("connect-src 'self'") && !policy.contains("unsafe"), "{policy}");
    let html = res.text().await.unwrap();
    assert!(html.contains("Sign in with a passkey") && html.contains("/static/webauthn.js"));
    let script = browser.get(&app.url("/static/webauthn.js")).await;
    assert!(script.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.text().await.unwrap().contains("navigator.credentials"));
    // Pages that need no script keep the strict policy.
    let consent_less = browser.get(&app.url("/logout")).await;
    assert!(!csp(&consent_less).contains("script-src"), "{}", csp(&consent_less));
}

#[tokio::test]
async fn an_ip_address_issuer_offers_no_passkeys_and_no_script() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&app.url("/login")).await;
    assert!(!csp(&res).contains("script-src"));
    let html = res.text().await.unwrap();
    assert!(!html.contains("passkey"), "{html}");
    let csrf = hidden(&html, "csrf_token");
    let res = browser.post_form("/login/passkey/options", &[("csrf_token", &csrf)]).await;
    assert_eq!(res.status(), 404, "passkeys are not available on 127.0.0.1");
}

#[tokio::test]
async fn forged_or_unrequested_answers_are_refused_and_audited() {
    let app = TestApp::spawn_with(Options { localhost: true, ..Default::default() }).await;
    app.fixture().await;
    let browser = Browser::new(&app);
    let html = browser.get(&app.url("/login")).await.text().await.unwrap();
    let csrf = hidden(&html, "csrf_token");
    // Options need the page's CSRF token.
    assert_eq!(browser.post_form("/login/passkey/options", &[]).await.status(), 403);
    // An answer with no ceremony started: refused.
    let res = browser.post_form("/login/passkey", &[("csrf_token", &csrf), ("credential", "{}")]).await;
    assert_eq!(res.status(), 400);
    // A ceremony, then a forged answer: refused, and the ceremony is used up.
    let res = browser.post_form("/login/passkey/options", &[("csrf_token", &csrf)]).await;
    assert_eq!(res.status(), 200);
    let options: serde_json::Value = res.json().await.unwrap();
    assert!(options["publicKey"]["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{options}");
    assert!(options.get("mediation").is_none(), "a button starts it, not autofill");
    let forged = serde_json::json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
        "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA", "userHandle": null}
    });
    let res = browser.post_form("/login/passkey", &[("csrf_token", &csrf), ("credential", &forged.to_string())]).await;
    assert_eq!(res.status(), 401);
    let res = browser.post_form("/login/passkey", &[("csrf_token", &csrf), ("credential", &forged.to_string())]).await;
    assert_eq!(res.status(), 400, "the ceremony was used up");
    assert_eq!(browser.get(&app.url("/account")).await.status(), 303, "not signed in");
    // The audit writer batches: wait (bounded) for the record.
    let mut failed = 0i64;
    for _ in 0..50 {
        failed = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'login.passkey_failed'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if failed > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1, "the forged answer is audited");
    // Adding a passkey needs a signed-in person.
    let res = browser.post_form("/account/passkeys/options", &[("csrf_token", &csrf)]).await;
    assert_eq!(res.status(), 403);
    assert_eq!(browser.login(&app.url("/login"), "alice", PASSWORD).await.status(), 303);
}
