//! What real clients do that the SDK journeys do not: concurrent and retried refreshes (the
//! reuse grace window), and the discovery and resource-naming edge cases they hit.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::flow::{RESOURCE, code_and_tokens};
use crate::common::{Options, TestApp};

async fn refresh(app: &TestApp, client_id: &str, token: &str) -> (StatusCode, Value) {
    let (status, _, body) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", client_id)], None).await;
    (status, body)
}

async fn grant_standing(app: &TestApp) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT bool_and(revoked_at IS NULL) FROM grants")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_end_on_one_chain() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    // 20 processes refresh the same token at once.
    let answers = futures_util::future::join_all((0..20).map(|_| refresh(&app, &f.client_id, &first))).await;
    let mut successors = Vec::new();
    for (status, body) in &answers {
        match status.as_u16() {
            200 => {
                successors.push(body["refresh_token"].as_str().unwrap().to_owned());
                assert!(body["access_token"].is_string());
            }
            400 => assert_eq!(body["error"], "invalid_grant", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!successors.is_empty(), "at least one refresh succeeded");
    successors.dedup();
    assert_eq!(successors.len(), 1, "every success carries the same successor");
    assert!(grant_standing(&app).await, "no racer revoked the grant");
    // The successor works; after that, the first token is theft.
    let (status, body) = refresh(&app, &f.client_id, &successors[0]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = refresh(&app, &f.client_id, &first).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(!grant_standing(&app).await, "reuse once the successor was used revokes the grant");
}

#[tokio::test]
async fn a_retried_refresh_within_the_window_gets_the_same_answer_and_after_it_revokes() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_REFRESH_TOKEN_REUSE_GRACE", "2s".into())],
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, a) = refresh(&app, &f.client_id, &first).await;
    assert_eq!(status, 200);
    // The answer was lost; the client retries.
    let (status, b) = refresh(&app, &f.client_id, &first).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(a["refresh_token"], b["refresh_token"], "the same successor");
    assert_ne!(a["access_token"], b["access_token"], "a fresh access token for the same grant");
    let claims = crate::common::flow::verify_jwt(&app, b["access_token"].as_str().unwrap()).await;
    let first_claims = crate::common::flow::verify_jwt(&app, a["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["gid"], first_claims["gid"]);
    app.state.audit.shutdown().await;
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'token.refresh_reused_within_grace'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
    // Past the window, the same retry is reuse: the grant is revoked.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = refresh(&app, &f.client_id, &first).await;
    assert_eq!((status.as_u16(), body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(!grant_standing(&app).await);
    let (status, _) = refresh(&app, &f.client_id, a["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "the successor died with the grant");
}

#[tokio::test]
async fn a_zero_grace_window_makes_every_reuse_revoke() {
    let app = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_REFRESH_TOKEN_REUSE_GRACE", "0s".into())],
        ..Default::default()
    })
    .await;
    let f = app.fixture().await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&app, &f.client_id, &first).await.0, 200);
    assert_eq!(refresh(&app, &f.client_id, &first).await.0, 400);
    assert!(!grant_standing(&app).await);
}

#[tokio::test]
async fn every_location_mcp_clients_probe_serves_the_same_document() {
    // The MCP authorization spec has clients try, in order: RFC 8414 path-inserted, OpenID
    // path-inserted, OpenID path-appended (for an issuer with a path), or the root forms.
    for path in ["", "/tenant"] {
        let app = TestApp::spawn_with(Options { issuer_path: path.into(), ..Default::default() }).await;
        let mut documents = Vec::new();
        for probe in [
            format!("{}/.well-known/oauth-authorization-server{path}", app.origin),
            format!("{}/.well-known/openid-configuration{path}", app.origin),
            format!("{}/.well-known/openid-configuration", app.base),
        ] {
            let res = app.client.get(&probe).send().await.unwrap();
            assert_eq!(res.status(), 200, "{probe}");
            let doc: Value = res.json().await.unwrap();
            assert_eq!(doc["issuer"], app.issuer.as_str(), "{probe}");
            documents.push(doc);
        }
        assert!(documents.windows(2).all(|w| w[0] == w[1]), "one document everywhere");
    }
}

#[tokio::test]
async fn resources_differing_only_by_a_trailing_slash_or_default_port_resolve() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    for named in ["https://mcp.example.com/mcp/", "https://mcp.example.com:443/mcp", "HTTPS://MCP.EXAMPLE.COM/mcp"] {
        let tokens = code_and_tokens(&app, &f, &[("resource", named)]).await;
        let claims = crate::common::flow::verify_jwt(&app, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["aud"], RESOURCE, "{named}");
    }
    for other in ["https://mcp.example.com/mcp2", "https://mcp.example.com:8443/mcp", "https://mcp.example.com/MCP"] {
        let url = crate::common::flow::authorize_url(
            &app,
            &f.client_id,
            &f.redirect_uri,
            &crate::common::flow::pkce(),
            &[("resource", other)],
        );
        let res = app.client.get(&url).send().await.unwrap();
        let location = crate::common::flow::location(&res);
        assert!(location.contains("error=invalid_target"), "{other}: {location}");
    }
}

async fn revoke(app: &TestApp, client_id: &str, token: &str) -> StatusCode {
    app.client
        .post(app.url("/revoke"))
        .form(&[("token", token), ("client_id", client_id)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Concurrent refreshes and revocations are written in shared batches (group commit): each must
/// still get its own answer, and act on its own grant only.
#[tokio::test]
async fn concurrent_refreshes_and_revocations_of_many_grants_each_act_on_their_own_grant() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let mut firsts = Vec::new();
    for _ in 0..24 {
        let tokens = code_and_tokens(&app, &f, &[]).await;
        firsts.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    }
    let answers = futures_util::future::join_all(firsts.iter().map(|t| refresh(&app, &f.client_id, t))).await;
    let mut seconds = Vec::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        seconds.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    let distinct: std::collections::HashSet<_> = seconds.iter().collect();
    assert_eq!(distinct.len(), 24, "every chain got its own successor");
    let rotated: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rotated, 24);

    // Revoke the even chains at once; the odd ones stand and still refresh.
    let revoked =
        futures_util::future::join_all(seconds.iter().step_by(2).map(|t| revoke(&app, &f.client_id, t))).await;
    assert!(revoked.iter().all(|s| *s == 200), "{revoked:?}");
    let standing: i64 = sqlx::query_scalar("SELECT count(*) FROM grants WHERE revoked_at IS NULL")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(standing, 12, "exactly the 12 presented grants were revoked");
    let again = futures_util::future::join_all(seconds.iter().map(|t| refresh(&app, &f.client_id, t))).await;
    for (i, (status, body)) in again.iter().enumerate() {
        let expected = if i % 2 == 0 { 400 } else { 200 };
        assert_eq!(status.as_u16(), expected, "chain {i}: {body}");
    }
    // The audit writer stores in batches: wait (bounded) for the records.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let audited = loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'token.revoked'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if n >= 12 || tokio::time::Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(audited, 12, "one audit record per revocation");
}
