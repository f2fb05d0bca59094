//! Discovery metadata, JWKS, signing keys, health (and a database refusing connections), and the
//! HTTP basics.

use std::time::Duration;

use serde_json::{Value, json};
use tessera::config::MasterKey;
use tessera::state::{AppState, ServerSettings};
use tessera::tokens::keys::KeyError;

use crate::common::flow::code_and_tokens;
use crate::common::{Options, TestApp, TestDb, test_master_key};

#[tokio::test]
async fn metadata_names_the_issuer_exactly() {
    let app = TestApp::spawn().await;
    let res = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["issuer"], app.issuer.as_str());
    assert!(!app.issuer.ends_with('/'));
    assert_eq!(doc["jwks_uri"], format!("{}/jwks.json", app.issuer));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    // Every URL the document lists answers.
    for (name, value) in doc.as_object().unwrap() {
        if name.ends_with("_uri") || name.ends_with("_endpoint") {
            let url = value.as_str().unwrap();
            assert!(url.starts_with(&app.issuer), "{name} = {url}");
            let status = app.client.get(url).send().await.unwrap().status();
            assert_ne!(status, 404, "{name} = {url} is not served");
        }
    }
}

#[tokio::test]
async fn metadata_at_path_inserted_location_when_issuer_has_a_path() {
    let app = TestApp::spawn_with(Options { issuer_path: "/tenant".into(), ..Default::default() }).await;
    assert!(app.issuer.ends_with("/tenant"));
    let res =
        app.client.get(format!("{}/.well-known/oauth-authorization-server/tenant", app.origin)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["issuer"], app.issuer.as_str());
    assert_eq!(doc["jwks_uri"], format!("{}/tenant/jwks.json", app.origin));
    let jwks = app.client.get(doc["jwks_uri"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    // The root location belongs to a different issuer (none), so it is not served.
    let root = app.client.get(format!("{}/.well-known/oauth-authorization-server", app.origin)).send().await.unwrap();
    assert_eq!(root.status(), 404);
}

#[tokio::test]
async fn jwks_publishes_one_es256_and_one_rs256_public_key() {
    let app = TestApp::spawn().await;
    let res = app.get("/jwks.json").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "one key per algorithm: {keys:?}");
    let key = keys.iter().find(|k| k["alg"] == "ES256").unwrap().as_object().unwrap();
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["x"].as_str().unwrap().len(), 43);
    assert_eq!(key["y"].as_str().unwrap().len(), 43);
    assert!(!key["kid"].as_str().unwrap().is_empty());
    let mut members: Vec<&str> = key.keys().map(String::as_str).collect();
    members.sort();
    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"], "no private member may appear");
    // A token signed by the active key verifies with the published key.
    let signer = app.state.keys.signing_key().unwrap();
    assert_eq!(signer.kid, key["kid"].as_str().unwrap());
    let token = signer.sign_access_token(&serde_json::json!({"sub": "t", "exp": 4102444800u64})).unwrap();
    let decoding =
        jsonwebtoken::DecodingKey::from_ec_components(key["x"].as_str().unwrap(), key["y"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();

    // The RS256 key (ID tokens): public members only, and it verifies what its private half signs.
    let rsa = keys.iter().find(|k| k["alg"] == "RS256").unwrap().as_object().unwrap();
    assert_eq!((&rsa["kty"], &rsa["use"], &rsa["e"]), (&json!("RSA"), &json!("sig"), &json!("AQAB")));
    assert_eq!(rsa["n"].as_str().unwrap().len(), 342, "a 2048-bit modulus");
    let mut members: Vec<&str> = rsa.keys().map(String::as_str).collect();
    members.sort();
    assert_eq!(members, ["alg", "e", "kid", "kty", "n", "use"], "no private member may appear");
    let signer = app.state.keys.signing_key_for(tessera::tokens::keys::Alg::Rs256).unwrap();
    assert_eq!(signer.kid, rsa["kid"].as_str().unwrap());
    let token = signer.sign_id_token(&serde_json::json!({"sub": "t", "exp": 4102444800u64})).unwrap();
    let decoding =
        jsonwebtoken::DecodingKey::from_rsa_components(rsa["n"].as_str().unwrap(), rsa["e"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(&token, &decoding, &validation).unwrap();
}

#[tokio::test]
async fn private_keys_are_encrypted_at_rest() {
    let app = TestApp::spawn().await;
    let (jwk, sealed): (Value, Vec<u8>) =
        sqlx::query_as("SELECT public_jwk, private_key_enc FROM signing_keys").fetch_one(&app.db.pool).await.unwrap();
    assert!(jwk.get("d").is_none());
    // PKCS#8 DER starts with a SEQUENCE (0x30); the stored form is nonce || ciphertext and must not.
    assert!(sealed.len() > 12 + 16);
    let kid = jwk["kid"].as_str().unwrap();
    let plain = tessera::tokens::keys::decrypt(&test_master_key(), kid, &sealed).unwrap();
    assert_eq!(plain[0], 0x30);
    assert!(!sealed.windows(plain.len().min(32)).any(|w| w == &plain[..plain.len().min(32)]));
}

#[tokio::test]
async fn wrong_master_key_is_an_error_not_a_new_key() {
    let app = TestApp::spawn().await;
    let config = tessera::config::Config::from_sources(&Default::default()).unwrap();
    let issuer = tessera::config::Issuer::parse(&app.issuer).unwrap();
    let settings = ServerSettings::from_config(&config, issuer, MasterKey::generate());
    match AppState::new(settings, app.db.pool.clone()).await {
        Err(KeyError::WrongMasterKey { .. }) => {}
        Err(other) => panic!("expected WrongMasterKey, got {other}"),
        Ok(_) => panic!("a wrong master key was accepted"),
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(count, 2, "no key may be created with the wrong master key (one per algorithm exists)");
}

#[tokio::test]
async fn instances_on_one_database_share_keys() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), Options::default()).await;
    let ja: Value = a.get("/jwks.json").await.json().await.unwrap();
    let jb: Value = b.get("/jwks.json").await.json().await.unwrap();
    assert_eq!(ja, jb);
    assert_eq!(a.state.keys.signing_key().unwrap().kid, b.state.keys.signing_key().unwrap().kid);
}

#[tokio::test]
async fn several_instances_starting_at_once_create_one_key() {
    let db = TestDb::new().await;
    let starts = (0..4).map(|_| TestApp::spawn_on(db.clone(), Options::default()));
    let apps = futures_join_all(starts).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys").fetch_one(&db.pool).await.unwrap();
    assert_eq!(count, 2, "one key per algorithm");
    let kid = apps[0].state.keys.signing_key().unwrap().kid.clone();
    assert!(apps.iter().all(|a| a.state.keys.signing_key().unwrap().kid == kid));
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    assert_eq!(app.client.get(format!("{}/healthz", app.origin)).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(format!("{}/readyz", app.origin)).send().await.unwrap().status(), 200);
    app.db.drop_now().await;
    let res = app.client.get(format!("{}/readyz", app.origin)).send().await.unwrap();
    assert_eq!(res.status(), 503);
    // Liveness does not depend on the database.
    assert_eq!(app.client.get(format!("{}/healthz", app.origin)).send().await.unwrap().status(), 200);
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

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let res = app.client.get(app.url("/jwks.json")).header("x-request-id", "lb-1234.abc").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "lb-1234.abc");
    let res = app.client.get(app.url("/jwks.json")).header("x-request-id", "bad id\twith spaces").send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "bad id\twith spaces");
    assert_eq!(id.len(), 32);
    let res = app.get("/jwks.json").await;
    assert!(res.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn security_headers_and_json_errors() {
    let app = TestApp::spawn().await;
    for path in ["/jwks.json", "/.well-known/oauth-authorization-server", "/no/such/route"] {
        let res = app.get(path).await;
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(!h.contains_key("strict-transport-security"), "no HSTS on a plain-http loopback issuer");
    }
    let res = app.get("/no/such/route").await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let res = app.client.post(app.url("/jwks.json")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .post(app.url("/.well-known/oauth-authorization-server"))
        .body(vec![b'a'; 200 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn rotation_is_published_at_once_on_every_instance() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db.clone(), Options::default()).await;
    let old = a.state.keys.signing_key().unwrap().kid.clone();
    // Rotate with the CLI against the same database, as an operator would.
    let out = crate::common::tessera_bin()
        .args(["keys", "rotate", "--delay", "10m"])
        .env("DATABASE_URL", a.db.url())
        .env("TESSERA_MASTER_KEY", test_master_key().to_base64())
        .output()
        .unwrap();
    assert!(out.status.success(), "keys rotate failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new = stdout.split_whitespace().nth(3).unwrap().to_owned();
    // Both instances publish both ES256 keys within a second (LISTEN/NOTIFY), and keep signing
    // with the old one. (The RS256 key is not rotated: ES256 is the default.)
    for app in [&a, &b] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let jwks: Value = app.get("/jwks.json").await.json().await.unwrap();
            let es256 = jwks["keys"].as_array().unwrap().iter().filter(|k| k["alg"] == "ES256");
            let kids: Vec<&str> = es256.map(|k| k["kid"].as_str().unwrap()).collect();
            if kids.len() == 2 {
                assert!(kids.contains(&old.as_str()) && kids.contains(&new.as_str()), "{kids:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "rotation not published: {kids:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(app.state.keys.signing_key().unwrap().kid, old, "the new key must not sign before its delay");
    }
    // `keys list` shows the schedule.
    let out =
        crate::common::tessera_bin().args(["keys", "list", "--json"]).env("DATABASE_URL", a.db.url()).output().unwrap();
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<(&str, &str)> =
        list.as_array().unwrap().iter().map(|k| (k["alg"].as_str().unwrap(), k["status"].as_str().unwrap())).collect();
    assert_eq!(statuses, [("ES256", "active"), ("RS256", "active"), ("ES256", "pending")]);
}

#[tokio::test]
async fn rotation_with_the_wrong_master_key_is_refused() {
    let app = TestApp::spawn().await;
    let out = crate::common::tessera_bin()
        .args(["keys", "rotate"])
        .env("DATABASE_URL", app.db.url())
        .env("TESSERA_MASTER_KEY", MasterKey::generate().to_base64())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TESSERA_MASTER_KEY"), "{stderr}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(count, 2, "still one key per algorithm");
}
