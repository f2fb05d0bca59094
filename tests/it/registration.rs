//! Dynamic client registration (RFC 7591) and management (RFC 7592), policy, limits, cleanup.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::flow::{Browser, Fixture, RESOURCE, authorize_url, code_and_tokens, location, pkce, query};
use crate::common::{Options, TestApp};

async fn register(app: &TestApp, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = app.client.post(app.url("/register")).json(&body).send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.json().await.unwrap_or(Value::Null))
}

fn native(redirect: &str) -> Value {
    json!({
        "redirect_uris": [redirect],
        "client_name": "My MCP Client",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "tools:read",
        "software_id": "com.example.mcp",
        "software_version": "1.2.3",
        "some_future_member": {"ignored": true}
    })
}

#[tokio::test]
async fn public_native_client_registers_and_completes_the_flow() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let user_id = app.add_user("alice").await;
    let (status, headers, body) = register(&app, native("http://127.0.0.1/callback")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    assert!(client_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
    assert!(body["client_id_issued_at"].is_i64());
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(body["redirect_uris"], json!(["http://127.0.0.1/callback"]));
    assert_eq!(body["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["application_type"], "native");
    assert_eq!(body["client_name"], "My MCP Client");
    assert_eq!(body["software_version"], "1.2.3");
    assert!(body.get("some_future_member").is_none());
    assert!(body.get("client_secret").is_none());
    let rat = body["registration_access_token"].as_str().unwrap();
    assert!(rat.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
    assert_eq!(body["registration_client_uri"], app.url(&format!("/register/{client_id}")));

    // The registered scope is not a ceiling: the client may step up to tools:write.
    let f = Fixture {
        resource: RESOURCE.into(),
        client_id: client_id.clone(),
        secret: None,
        redirect_uri: "http://127.0.0.1/callback".into(),
        username: "alice".into(),
        user_id,
    };
    let tokens = code_and_tokens(&app, &f, &[("scope", "tools:read tools:write")]).await;
    assert_eq!(tokens["scope"], "tools:read tools:write");
    assert!(tokens["refresh_token"].is_string());
    let stored: (Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT secret_hash, registration_token_hash FROM clients WHERE client_id = $1")
            .bind(&client_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(stored.0.is_none());
    assert_eq!(stored.1.unwrap().len(), 32, "the registration token is kept as a digest");
}

#[tokio::test]
async fn confidential_web_client_gets_a_secret_once() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (status, _, body) = register(
        &app,
        json!({"redirect_uris": ["https://app.example.com/callback"], "token_endpoint_auth_method": "client_secret_basic",
               "client_name": "Web App", "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["application_type"], "web");
    assert_eq!(body["client_secret_expires_at"], 0);
    let id = body["client_id"].as_str().unwrap();
    let secret = body["client_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 43);
    // The secret authenticates at the token endpoint (a refresh attempt with a bogus token
    // gets past client authentication to invalid_grant).
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", "nope")], Some((id, secret))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (status, _, _) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", "nope")], Some((id, "wrong"))).await;
    assert_eq!(status, 401);
    // Self-registered clients never get client_credentials.
    let (status, _, body) = app.token(&[("grant_type", "client_credentials")], Some((id, secret))).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
    let _ = f;
}

#[tokio::test]
async fn invalid_metadata_is_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let ok = "https://app.example.com/cb";
    let cases = [
        (json!({}), "invalid_redirect_uri", "redirect_uris"),
        (json!({"redirect_uris": "https://app.example.com/cb"}), "invalid_redirect_uri", "redirect_uris"),
        (json!({"redirect_uris": ["javascript:alert(1)"]}), "invalid_redirect_uri", "javascript"),
        (json!({"redirect_uris": ["JavaScript:alert(1)"]}), "invalid_redirect_uri", "javascript"),
        (json!({"redirect_uris": ["data:text/html,<script>x</script>"]}), "invalid_redirect_uri", "data"),
        (json!({"redirect_uris": ["VBSCRIPT:x"]}), "invalid_redirect_uri", "vbscript"),
        (json!({"redirect_uris": ["File:///etc/passwd"]}), "invalid_redirect_uri", "file"),
        (json!({"redirect_uris": ["https://app.example.com/cb#frag"]}), "invalid_redirect_uri", "fragment"),
        (json!({"redirect_uris": ["https://*.example.com/cb"]}), "invalid_redirect_uri", "wildcard"),
        (json!({"redirect_uris": ["/relative"]}), "invalid_redirect_uri", "redirect_uris"),
        (json!({"redirect_uris": ["https://user:pw@app.example.com/cb"]}), "invalid_redirect_uri", "user information"),
        (json!({"redirect_uris": ["http://app.example.com/cb"]}), "invalid_redirect_uri", "https"),
        (json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"}), "invalid_redirect_uri", "web"),
        (json!({"redirect_uris": [ok], "grant_types": ["password"]}), "invalid_client_metadata", "grant_types"),
        (
            json!({"redirect_uris": [ok], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
            "grant_types",
        ),
        (json!({"redirect_uris": [ok], "grant_types": ["implicit"]}), "invalid_client_metadata", "grant_types"),
        (json!({"redirect_uris": [ok], "response_types": ["token"]}), "invalid_client_metadata", "response_types"),
        (
            json!({"redirect_uris": [ok], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
            "token_endpoint_auth_method",
        ),
        (json!({"redirect_uris": [ok], "client_name": ["array"]}), "invalid_client_metadata", "client_name"),
        (json!({"redirect_uris": [ok], "client_name": "x".repeat(500)}), "invalid_client_metadata", "client_name"),
        (json!({"redirect_uris": [ok], "logo_uri": "javascript:alert(1)"}), "invalid_client_metadata", "logo_uri"),
        (json!({"redirect_uris": [ok], "contacts": [1, 2]}), "invalid_client_metadata", "contacts"),
        (json!({"redirect_uris": [ok], "application_type": "desktop"}), "invalid_client_metadata", "application_type"),
        (json!([ok]), "invalid_client_metadata", "object"),
    ];
    for (doc, error, field) in cases {
        let (status, _, body) = register(&app, doc.clone()).await;
        assert_eq!(status, 400, "{doc}: {body}");
        assert_eq!(body["error"], error, "{doc}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains(field), "{doc}: {body}");
    }
    let eleven: Vec<String> = (0..11).map(|i| format!("https://app.example.com/cb{i}")).collect();
    let (status, _, body) = register(&app, json!({"redirect_uris": eleven})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_redirect_uri")));

    // Not JSON, wrong content type, too big, too deep.
    let post = |ct: &'static str, body: Vec<u8>| {
        app.client.post(app.url("/register")).header("content-type", ct).body(body).send()
    };
    let res = post("application/json", b"{not json".to_vec()).await.unwrap();
    assert_eq!(res.status(), 400);
    let res = post("application/x-www-form-urlencoded", b"redirect_uris=https://a.example/cb".to_vec()).await.unwrap();
    assert_eq!(res.status(), 400);
    let big = format!(r#"{{"redirect_uris":["{ok}"],"client_name":"{}"}}"#, "x".repeat(20 * 1024));
    let res = post("application/json", big.into_bytes()).await.unwrap();
    assert_eq!(res.status(), 413);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let res = post("application/json", deep.into_bytes()).await.unwrap();
    assert_eq!(res.status(), 400);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM clients").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(count, 0, "nothing was registered");
}

#[tokio::test]
async fn rfc7592_read_update_delete() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let (_, _, reg) = register(&app, native("http://127.0.0.1/callback")).await;
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let token = reg["registration_access_token"].as_str().unwrap().to_owned();
    let uri = reg["registration_client_uri"].as_str().unwrap().to_owned();
    let (_, _, other) = register(&app, native("http://127.0.0.1/other")).await;
    let other_token = other["registration_access_token"].as_str().unwrap().to_owned();

    let res = app.client.get(&uri).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let read: Value = res.json().await.unwrap();
    assert_eq!(read["client_id"], id.as_str());
    assert_eq!(read["redirect_uris"], reg["redirect_uris"]);
    assert_eq!(read["registration_access_token"], token.as_str());
    for bad in [None, Some("wrong"), Some(other_token.as_str())] {
        let mut req = app.client.get(&uri);
        if let Some(t) = bad {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{bad:?}");
        assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    // An operator-registered client has no registration token: 401, not 404.
    let res = app.client.get(app.url(&format!("/register/{}", f.client_id))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 401);

    // PUT replaces the metadata under the same validation.
    let mut new = native("http://127.0.0.1/new-callback");
    new["client_id"] = json!(id);
    new["client_name"] = json!("Renamed");
    let res = app.client.put(&uri).bearer_auth(&token).json(&new).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    assert_eq!(updated["redirect_uris"], json!(["http://127.0.0.1/new-callback"]));
    let browser = Browser::new(&app);
    let res = browser.get(&authorize_url(&app, &id, "http://127.0.0.1/callback", &pkce(), &[])).await;
    assert_eq!(res.status(), 400, "the old redirect URI is gone");
    let mut bad = new.clone();
    bad["redirect_uris"] = json!(["javascript:alert(1)"]);
    let res = app.client.put(&uri).bearer_auth(&token).json(&bad).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let mut no_id = new.clone();
    no_id.as_object_mut().unwrap().remove("client_id");
    assert_eq!(app.client.put(&uri).bearer_auth(&token).json(&no_id).send().await.unwrap().status(), 400);
    assert_eq!(app.client.put(&uri).bearer_auth("wrong").json(&new).send().await.unwrap().status(), 401);

    // DELETE: gone everywhere.
    assert_eq!(app.client.delete(&uri).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(app.client.delete(&uri).bearer_auth(&token).send().await.unwrap().status(), 204);
    assert_eq!(app.client.get(&uri).bearer_auth(&token).send().await.unwrap().status(), 401);
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", &id)], None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    let res = browser.get(&authorize_url(&app, &id, "http://127.0.0.1/new-callback", &pkce(), &[])).await;
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("location").is_none());
}

#[tokio::test]
async fn registration_policies() {
    let closed = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_REGISTRATION", "closed".into())],
        ..Default::default()
    })
    .await;
    let (status, _, body) = register(&closed, native("http://127.0.0.1/cb")).await;
    assert_eq!(status, 403, "{body}");
    let meta: Value = closed.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert!(meta.get("registration_endpoint").is_none(), "a closed endpoint is not advertised");

    let gated =
        TestApp::spawn_with(Options { settings: vec![("TESSERA_REGISTRATION", "token".into())], ..Default::default() })
            .await;
    let (status, headers, _) = register(&gated, native("http://127.0.0.1/cb")).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let out = crate::common::tessera_bin()
        .args(["client", "registration-token", "--uses", "1", "--note", "for the test"])
        .env("DATABASE_URL", gated.db.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim().strip_prefix("registration_token ").unwrap().to_owned();
    let with =
        |t: &str| gated.client.post(gated.url("/register")).bearer_auth(t).json(&native("http://127.0.0.1/cb")).send();
    assert_eq!(with("not-the-token").await.unwrap().status(), 401);
    assert_eq!(with(&token).await.unwrap().status(), 201);
    assert_eq!(with(&token).await.unwrap().status(), 401, "used up");
    let meta: Value = gated.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert_eq!(meta["registration_endpoint"], gated.url("/register"));
}

#[tokio::test]
async fn registration_is_rate_limited_per_source_and_recovers() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_REGISTRATION_RATE_LIMIT", "3/3s".into())],
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(register(&app, native("http://127.0.0.1/cb")).await.0, 201);
    }
    let (status, headers, body) = register(&app, native("http://127.0.0.1/cb")).await;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert!(body["error"].is_string() && body["error_description"].is_string());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(register(&app, native("http://127.0.0.1/cb")).await.0, 201, "recovered");
}

#[tokio::test]
async fn registration_answers_cross_origin_requests() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/register"))
        .header("origin", "http://localhost:6274")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let res = app
        .client
        .post(app.url("/register"))
        .header("origin", "http://localhost:6274")
        .json(&native("http://127.0.0.1/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn stale_self_registered_clients_are_cleaned_up() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, _, body) = register(&app, native("http://127.0.0.1/callback")).await;
        ids.push(body["client_id"].as_str().unwrap().to_owned());
    }
    // 0: registered 25 hours ago, never authorized. 1: authorized, unused for 91 days. 2: fresh.
    sqlx::query("UPDATE clients SET created_at = now() - interval '25 hours' WHERE client_id = $1")
        .bind(&ids[0])
        .execute(&app.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE clients SET created_at = now() - interval '200 days', first_authorized_at = now() - interval '199 days',
                            last_used_at = now() - interval '91 days' WHERE client_id = $1",
    )
    .bind(&ids[1])
    .execute(&app.db.pool)
    .await
    .unwrap();
    // The operator's client is old and unused, and stays.
    sqlx::query("UPDATE clients SET created_at = now() - interval '400 days' WHERE client_id = $1")
        .bind(&f.client_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.state.run_maintenance().await;
    let left: Vec<String> =
        sqlx::query_scalar("SELECT client_id FROM clients ORDER BY created_at").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(left, vec![f.client_id.clone(), ids[2].clone()]);
}

#[tokio::test]
async fn a_completed_authorization_marks_the_client_used() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let user_id = app.add_user("alice").await;
    let (_, _, reg) = register(&app, native("http://127.0.0.1/callback")).await;
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let f = Fixture {
        resource: RESOURCE.into(),
        client_id: id.clone(),
        secret: None,
        redirect_uri: "http://127.0.0.1/callback".into(),
        username: "alice".into(),
        user_id,
    };
    code_and_tokens(&app, &f, &[]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let marked: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("SELECT first_authorized_at FROM clients WHERE client_id = $1")
                .bind(&id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        if marked.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "first_authorized_at never set");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Consent for a self-registered client is always asked, and it is labelled unverified.
    let browser = Browser::new(&app);
    let res = browser.get(&authorize_url(&app, &id, "http://127.0.0.1/callback", &pkce(), &[])).await;
    let res = browser.login(&location(&res), "alice", crate::common::flow::PASSWORD).await;
    let consent = location(&res);
    assert!(consent.contains("/consent"));
    let page = browser.get(&consent).await.text().await.unwrap();
    assert!(page.contains("unverified") && page.contains("My MCP Client"));
    let _ = query;
}
