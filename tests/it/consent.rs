//! Consent with choices: a checkbox per requested scope (required ones cannot be unchecked), the
//! grant gets what was left checked, and the token response's `scope` says so (RFC 6749 §3.3);
//! a scope's details and tools (`tessera resource scope`) are shown under it.

use reqwest::StatusCode;

use crate::common::TestApp;
use crate::common::flow::{Browser, RESOURCE, authorize_url, hidden, location, pkce, query, verify_jwt};
use crate::common::{admin, admin_fails};
use tessera::store::resources::{self, ScopeDetails};

/// Describe `tools:read` as required, with details and tools, the way the CLI does.
async fn describe_scopes(app: &TestApp) {
    let read = ScopeDetails {
        details: Some("Lets the application search and read your notes.".into()),
        tools: vec!["list_notes".into(), "search_notes".into()],
        required: true,
    };
    assert!(resources::set_scope(&app.db.pool, RESOURCE, "tools:read", None, &read).await.unwrap());
    app.state.reload_resources().await;
}

#[tokio::test]
async fn the_grant_gets_the_scopes_left_checked_and_the_token_response_says_so() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    describe_scopes(&app).await;
    let browser = Browser::new(&app);
    let p = pkce();
    let url =
        authorize_url(&app, &f.client_id, &f.redirect_uri, &p, &[("scope", "tools:read tools:write offline_access")]);
    let login = location(&browser.get(&url).await);
    let res = browser.login(&login, "alice", crate::common::flow::PASSWORD).await;
    let consent = location(&res);
    let html = browser.get(&consent).await.text().await.unwrap();
    // A checkbox per scope, all checked; the required one disabled; details and tools shown.
    for scope in ["tools:read", "tools:write", "offline_access"] {
        assert!(html.contains(&format!("name=\"scope:{scope}\" value=\"on\" checked")), "{scope}: {html}");
    }
    assert!(html.contains("name=\"scope:tools:read\" value=\"on\" checked disabled"), "{html}");
    assert!(html.contains("Lets the application search and read your notes."));
    assert!(html.contains("list_notes") && html.contains("search_notes"));
    assert_eq!(html.matches("<label for=\"scope-").count(), 3, "a label for every checkbox");
    // Uncheck tools:write; a forged scope nobody asked for and the absent required one change
    // nothing beyond what was asked.
    let form = [
        ("csrf_token", hidden(&html, "csrf_token")),
        ("request", hidden(&html, "request")),
        ("choices", "1".into()),
        ("scope:offline_access", "on".into()),
        ("scope:admin", "on".into()),
        ("decision", "allow".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let res = browser.post_form("/consent", &form).await;
    assert_eq!(res.status(), 303);
    let code = query(&location(&res)).remove("code").expect("a code");
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &f.redirect_uri),
                ("code_verifier", &p.verifier),
                ("client_id", &f.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "offline_access tools:read", "{body}");
    let claims = verify_jwt(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "offline_access tools:read");
    // The approval remembered is what was granted: asking for tools:write again shows the page.
    let again = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read tools:write")]);
    assert!(location(&browser.get(&again).await).starts_with(&app.url("/consent")));
    let narrower = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read")]);
    let back = location(&browser.get(&narrower).await);
    assert!(back.starts_with(&f.redirect_uri) && back.contains("code="), "remembered: {back}");
}

#[tokio::test]
async fn a_form_without_choices_allows_everything_asked_and_deny_still_denies() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let url = authorize_url(&app, &f.client_id, &f.redirect_uri, &pkce(), &[("scope", "tools:read tools:write")]);
    let login = location(&browser.get(&url).await);
    let consent = location(&browser.login(&login, "alice", crate::common::flow::PASSWORD).await);
    let res = browser.consent(&consent, "deny").await;
    assert_eq!(query(&location(&res))["error"], "access_denied");
    let callback = browser.authorize(&url, "alice").await;
    assert!(query(&callback).contains_key("code"));
    let scopes: Vec<String> = sqlx::query_scalar("SELECT scopes FROM grants").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(scopes, ["tools:read", "tools:write"]);
}

#[tokio::test]
async fn the_cli_describes_scopes_and_refuses_bad_input() {
    let app = TestApp::spawn().await;
    app.fixture().await;
    let out = admin(
        &app.db,
        &[
            "resource",
            "scope",
            RESOURCE,
            "tools:write",
            "--details",
            "Changes things.",
            "--tool",
            "delete_note",
            "--tool",
            "add_note",
        ],
        "",
    );
    assert!(out.contains("tools:write: 2 tools"), "{out}");
    let out = admin(
        &app.db,
        &["resource", "scope", RESOURCE, "notes:admin", "--description", "Manage notes", "--required"],
        "",
    );
    assert!(out.contains("notes:admin: 0 tools, required"), "{out}");
    let all = resources::list(&app.db.pool).await.unwrap();
    let r = all.iter().find(|r| r.uri == RESOURCE).unwrap();
    assert_eq!(r.scopes["notes:admin"], "Manage notes");
    assert_eq!(r.scope_details["tools:write"].tools, ["add_note", "delete_note"]);
    assert!(r.scope_details["notes:admin"].required);
    let err = admin_fails(&app.db, &["resource", "scope", RESOURCE, "unknown:scope"]);
    assert!(err.contains("--description"), "{err}");
    let err = admin_fails(&app.db, &["resource", "scope", RESOURCE, "tools:read", "--tool", "has space"]);
    assert!(err.contains("--tool"), "{err}");
    let err = admin_fails(&app.db, &["resource", "scope", "https://nowhere.example/mcp", "tools:read"]);
    assert!(err.contains("not registered"), "{err}");
    assert_eq!(StatusCode::OK, app.get("/.well-known/oauth-authorization-server").await.status());
}
