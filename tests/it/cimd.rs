//! Client ID metadata documents: a document served from loopback (test switch on) completes the
//! whole flow; URL rules, SSRF refusal, response rules, caching and de-duplication.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::docserver::{DocServer, Reply};
use crate::common::flow::{Browser, PASSWORD, RESOURCE, authorize_url, location, pkce, query};
use crate::common::{Options, TestApp};

async fn test_app() -> TestApp {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_CIMD_ALLOW_LOOPBACK", "true".into())],
        ..Default::default()
    })
    .await;
    app.add_resource(RESOURCE, true).await;
    app.add_user("alice").await;
    app
}

fn document(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Doc Client",
        "client_uri": "https://doc-client.example.com",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    })
}

/// GET /authorize for a document client and return (status, page text or location).
async fn try_authorize(app: &TestApp, client_id: &str) -> (u16, String) {
    let res = Browser::new(app).get(&authorize_url(app, client_id, "http://127.0.0.1/callback", &pkce(), &[])).await;
    let status = res.status().as_u16();
    if status == 303 { (status, location(&res)) } else { (status, res.text().await.unwrap()) }
}

#[tokio::test]
async fn a_metadata_document_client_completes_the_flow() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let client_id = format!("{base}/oauth/client.json");
    docs.set("/oauth/client.json", Reply::json(document(&client_id)));

    let browser = Browser::new(&app);
    let p = pkce();
    let res = browser.get(&authorize_url(&app, &client_id, "http://127.0.0.1:50123/callback", &p, &[])).await;
    assert_eq!(res.status(), 303);
    let res = browser.login(&location(&res), "alice", PASSWORD).await;
    let consent = location(&res);
    assert!(consent.contains("/consent"), "{consent}");
    let page = browser.get(&consent).await.text().await.unwrap();
    assert!(page.contains("Doc Client") && page.contains("unverified"));
    assert!(page.contains("identifies itself with a document at"), "the document host is shown");
    assert!(page.contains("127.0.0.1"));
    assert!(page.contains("on this computer (localhost)"), "localhost-only warning");
    let res = browser.consent(&consent, "allow").await;
    let callback = location(&res);
    assert!(callback.starts_with("http://127.0.0.1:50123/callback"));
    let code = query(&callback)["code"].clone();
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:50123/callback"),
                ("code_verifier", &p.verifier),
                ("client_id", &client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["refresh_token"].is_string());
    let claims = crate::common::flow::verify_jwt(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["client_id"], client_id.as_str());
    assert_eq!(docs.hits("/oauth/client.json"), 1, "fetched once, then served from the cache");
    let meta: Value = app.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);
}

#[tokio::test]
async fn url_rules_are_checked_before_any_fetch() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let good = format!("{base}/client.json");
    docs.set("/client.json", Reply::json(document(&good)));
    let port = base.rsplit(':').next().unwrap();
    for bad in [
        format!("http://user@127.0.0.1:{port}/client.json"),
        format!("{base}/client.json#frag"),
        format!("{base}/a/../client.json"),
        format!("{base}/a/%2e%2e/client.json"),
        format!("{base}/./client.json"),
        base.clone(),
        format!("{base}/"),
        format!("{base}/{}", "x".repeat(1100)),
        "http://example.com/client.json".to_owned(),
    ] {
        let (status, page) = try_authorize(&app, &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(page.contains("client_id URL"), "{bad}: {page}");
    }
    assert_eq!(docs.hits("/client.json"), 0);
}

#[tokio::test]
async fn private_addresses_are_refused_without_a_connection() {
    // Test switch off; the listener's port allowed so that only the address check stands.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_CIMD_ALLOWED_PORTS", port.to_string())],
        ..Default::default()
    })
    .await;
    for client_id in [format!("https://localhost:{port}/client.json"), format!("https://127.0.0.1:{port}/client.json")]
    {
        let (status, page) = try_authorize(&app, &client_id).await;
        assert_eq!(status, 400, "{client_id}");
        assert!(page.contains("may not be fetched"), "{page}");
    }
    // The listener must not have seen a single connection.
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(accepted.is_err(), "a connection reached the private address");
    // And http is refused outright with the switch off.
    let (status, page) = try_authorize(&app, &format!("http://127.0.0.1:{port}/client.json")).await;
    assert_eq!(status, 400);
    assert!(page.contains("https"));
}

#[tokio::test]
async fn bad_responses_are_refused_and_never_cached() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let id = |p: &str| format!("{base}{p}");

    let mut big = document(&id("/big.json"));
    big["padding"] = json!("x".repeat(6000));
    docs.set("/big.json", Reply::json(big.clone()));
    let mut drip_big = Reply::json(big);
    drip_big.drip = Some(Duration::from_millis(1));
    docs.set("/chunked-big.json", drip_big);
    let mut redirect = Reply::json(json!({}));
    redirect.status = 302;
    redirect.headers = vec![("location", id("/client.json"))];
    docs.set("/redirect.json", redirect);
    let mut html = Reply::json(document(&id("/html.json")));
    html.content_type = "text/html";
    docs.set("/html.json", html);
    let mut not_json = Reply::json(json!({}));
    not_json.body = b"{ this is not json".to_vec();
    docs.set("/garbage.json", not_json);
    docs.set("/mismatch.json", Reply::json(document(&id("/other.json"))));
    let mut no_redirects = document(&id("/noredirects.json"));
    no_redirects.as_object_mut().unwrap().remove("redirect_uris");
    docs.set("/noredirects.json", Reply::json(no_redirects));
    let mut secret = document(&id("/secret.json"));
    secret["token_endpoint_auth_method"] = json!("client_secret_basic");
    docs.set("/secret.json", Reply::json(secret));

    let cases = [
        ("/big.json", "larger than 5 KiB"),
        ("/chunked-big.json", "larger than 5 KiB"),
        ("/redirect.json", "HTTP 302"),
        ("/missing.json", "HTTP 404"),
        ("/html.json", "not JSON"),
        ("/garbage.json", "not valid JSON"),
        ("/mismatch.json", "does not equal the URL"),
        ("/noredirects.json", "redirect_uris"),
        ("/secret.json", "public"),
    ];
    for (path, expected) in cases {
        let (status, page) = try_authorize(&app, &id(path)).await;
        assert_eq!(status, 400, "{path}");
        assert!(page.contains(expected), "{path}: expected {expected:?} in {page}");
        // Not cached: a second attempt fetches again.
        let before = docs.hits(path);
        try_authorize(&app, &id(path)).await;
        assert_eq!(docs.hits(path), before + 1, "{path}: a failure must not be cached");
    }
    assert_eq!(docs.hits("/client.json"), 0, "the redirect was not followed");
    // The token endpoint says invalid_client for a document that cannot be used.
    let (status, _, body) = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", &id("/missing.json"))], None)
        .await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (401, Some("invalid_client")));
    // Error pages carry no upstream detail.
    let (_, page) = try_authorize(&app, &id("/missing.json")).await;
    assert!(!page.contains("reqwest") && !page.contains("error sending request"));
}

#[tokio::test]
async fn slow_documents_time_out() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let mut slow = Reply::json(document(&format!("{base}/slow.json")));
    slow.delay = Duration::from_secs(30);
    docs.set("/slow.json", slow);
    // A slow drip: each chunk in time, the whole far too late.
    let mut drip = Reply::json(document(&format!("{base}/drip.json")));
    let mut padded = document(&format!("{base}/drip.json"));
    padded["client_name"] = json!("d".repeat(100));
    drip.body = serde_json::to_vec(&padded).unwrap();
    drip.drip = Some(Duration::from_secs(2));
    docs.set("/drip.json", drip);
    for path in ["/slow.json", "/drip.json"] {
        let started = std::time::Instant::now();
        let (status, page) = try_authorize(&app, &format!("{base}{path}")).await;
        let took = started.elapsed();
        assert_eq!(status, 400, "{path}");
        assert!(page.contains("within 5 seconds"), "{path}: {page}");
        assert!(took < Duration::from_secs(8), "{path} took {took:?}");
    }
}

/// Make the cached document stale, as time would.
async fn expire_document(app: &TestApp, client_id: &str) {
    sqlx::query("UPDATE clients SET document_expires_at = now() - interval '1 second' WHERE client_id = $1")
        .bind(client_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    // What the trigger's notification does moments later, done now so the test does not race it.
    app.state.clients.invalidate(client_id);
}

#[tokio::test]
async fn caching_follows_cache_control_and_stale_documents_are_refetched() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let client_id = format!("{base}/cached.json");
    let mut reply = Reply::json(document(&client_id));
    reply.headers = vec![("cache-control", "public, max-age=600".into())];
    docs.set("/cached.json", reply);
    for _ in 0..3 {
        let (status, loc) = try_authorize(&app, &client_id).await;
        assert_eq!(status, 303, "{loc}");
    }
    assert_eq!(docs.hits("/cached.json"), 1);
    let expires: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT document_expires_at FROM clients WHERE client_id = $1")
            .bind(&client_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let ttl = (expires - chrono::Utc::now()).num_seconds();
    assert!((590..=600).contains(&ttl), "max-age honoured: {ttl}");

    // Stale: fetched again before use, and the new content applies.
    let mut renamed = document(&client_id);
    renamed["client_name"] = json!("Renamed Doc Client");
    docs.set("/cached.json", Reply::json(renamed));
    expire_document(&app, &client_id).await;
    let (status, _) = try_authorize(&app, &client_id).await;
    assert_eq!(status, 303);
    assert_eq!(docs.hits("/cached.json"), 2);
    let name: String = sqlx::query_scalar("SELECT client_name FROM clients WHERE client_id = $1")
        .bind(&client_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(name, "Renamed Doc Client");

    // A stale document that now fails is not used.
    docs.set("/cached.json", Reply { status: 500, ..Reply::json(json!({})) });
    expire_document(&app, &client_id).await;
    let (status, page) = try_authorize(&app, &client_id).await;
    assert_eq!(status, 400);
    assert!(page.contains("HTTP 500"));
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let client_id = format!("{base}/slowish.json");
    let mut reply = Reply::json(document(&client_id));
    reply.delay = Duration::from_millis(500);
    docs.set("/slowish.json", reply);
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let app = app.clone();
        let client_id = client_id.clone();
        tasks.push(tokio::spawn(async move { try_authorize(&app, &client_id).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 303);
    }
    assert_eq!(docs.hits("/slowish.json"), 1);
}

#[tokio::test]
async fn fetches_are_rate_limited_per_host() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_CIMD_ALLOW_LOOPBACK", "true".into()), ("TESSERA_CIMD_FETCHES_PER_MINUTE", "2".into())],
        ..Default::default()
    })
    .await;
    app.add_resource(RESOURCE, true).await;
    let (docs, base) = DocServer::start().await;
    for i in 0..3 {
        let path = format!("/c{i}.json");
        docs.set(&path, Reply::json(document(&format!("{base}{path}"))));
    }
    assert_eq!(try_authorize(&app, &format!("{base}/c0.json")).await.0, 303);
    assert_eq!(try_authorize(&app, &format!("{base}/c1.json")).await.0, 303);
    let (status, page) = try_authorize(&app, &format!("{base}/c2.json")).await;
    assert_eq!(status, 400);
    assert!(page.contains("too many metadata document fetches"), "{page}");
    assert_eq!(docs.hits("/c2.json"), 0);
}

#[tokio::test]
async fn a_document_must_name_itself_exactly_as_presented() {
    let app = test_app().await;
    let (docs, base) = DocServer::start().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    // (client_id as presented, path it is served at, the document's own client_id)
    let mut cases = vec![
        (format!("{base}/slash.json"), "/slash.json", format!("{base}/slash.json/")),
        (format!("{base}/scheme.json"), "/scheme.json", format!("HTTP://127.0.0.1:{port}/scheme.json")),
        (format!("{base}/pct.json"), "/pct.json", format!("{base}/%70ct.json")),
        (format!("{base}/%70ct2.json"), "/%70ct2.json", format!("{base}/pct2.json")),
        (format!("{base}/dot.json"), "/dot.json", format!("http://127.0.0.1.:{port}/dot.json")),
    ];
    // The explicit default port, on a loopback address of its own (port 80 needs root; the
    // host-case and https variants are in the unit tests of `cimd::validate_document`).
    let default_port = tokio::net::TcpListener::bind("127.77.0.1:80").await;
    let port80 = match default_port {
        Ok(listener) => Some(DocServer::serve_on(listener)),
        Err(e) => {
            eprintln!("skipping the default-port rows: cannot listen on 127.77.0.1:80 ({e})");
            None
        }
    };
    if port80.is_some() {
        cases.push(("http://127.77.0.1:80/p80.json".into(), "/p80.json", "http://127.77.0.1/p80.json".into()));
        cases.push(("http://127.77.0.1/p80b.json".into(), "/p80b.json", "http://127.77.0.1:80/p80b.json".into()));
    }
    for (presented, path, named) in &cases {
        let server = if presented.starts_with("http://127.77.0.1") { port80.as_ref().unwrap() } else { &docs };
        server.set(path, Reply::json(document(named)));
        let (status, page) = try_authorize(&app, presented).await;
        assert_eq!(status, 400, "{presented} vs {named}");
        assert!(page.contains("does not equal the URL"), "{presented} vs {named}: {page}");
        assert_eq!(server.hits(path), 1, "{presented} was fetched");
        let (status, _, body) =
            app.token(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", presented)], None).await;
        assert_eq!((status.as_u16(), body["error"].as_str()), (401, Some("invalid_client")), "{presented}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM clients").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(stored, 0, "no client stored for a document that names itself differently");
    // The control: the same document under the URL it names is accepted, and stored under it.
    let exact = format!("{base}/exact.json");
    docs.set("/exact.json", Reply::json(document(&exact)));
    let (status, _) = try_authorize(&app, &exact).await;
    assert_eq!(status, 303);
    let ids: Vec<String> = sqlx::query_scalar("SELECT client_id FROM clients").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(ids, [exact]);
}
