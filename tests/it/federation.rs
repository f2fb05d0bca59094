//! Sign-in through an upstream identity provider. The OpenID Connect provider is a second real
//! Tessera (it speaks OpenID Connect: discovery, code + PKCE, RS256 ID tokens with nonce), served
//! on 127.0.0.2 so the two keep their session cookies apart as two sites would. A hostile or
//! broken provider, and GitHub's API, are played by the loopback document server.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera::signin::federation::providers::{self, NewUpstream, Preset};
use tessera::store;

use crate::common::docserver::{DocServer, Reply};
use crate::common::flow::{Browser, ClientSpec, PASSWORD, authorize_url, hidden, location, pkce, query};
use crate::common::{Options, TestApp, admin, test_master_key};

const CORP: &str = "corp";

/// Tessera (`down`, the one MCP clients use) and the provider (`idp`, a second Tessera) with
/// the person `ann` (ann@corp.example, verified unless said otherwise) and Tessera registered as
/// a confidential OpenID client.
struct Pair {
    down: TestApp,
    idp: TestApp,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
}

fn new_upstream(name: &str, preset: Preset, client_id: &str, secret: &str) -> NewUpstream {
    NewUpstream {
        name: name.into(),
        preset,
        client_id: client_id.into(),
        client_secret: secret.into(),
        scopes: vec![],
        button: Some("Sign in with Test IdP".into()),
        allowed_domains: vec![],
        allowed_emails: vec![],
        required_groups: vec![],
        accounts: "jit".into(),
        link_existing: false,
        allow_private_network: true,
    }
}

impl Pair {
    async fn start(email_verified: bool) -> Self {
        let down = TestApp::spawn().await;
        down.add_resource(crate::common::flow::RESOURCE, true).await;
        let idp = TestApp::spawn_with(Options { host: Some("127.0.0.2"), ..Default::default() }).await;
        idp.add_user("ann").await;
        let change = store::users::ProfileChange {
            email: Some(Some("ann@corp.example")),
            name: Some(Some("Ann Lee")),
            email_verified: Some(email_verified),
        };
        store::users::update_profile(&idp.db.pool, "ann", &change).await.unwrap();
        let callback = format!("{}/login/upstream/{CORP}/callback", down.issuer);
        let spec = ClientSpec {
            name: "Tessera down",
            redirect_uris: vec![callback],
            confidential: true,
            ..Default::default()
        };
        let (client_id, secret) = idp.add_client(spec).await;
        Self { down, idp, client_id, client_secret: secret.unwrap(), http: crate::common::client() }
    }

    async fn add_upstream(&self, change: impl FnOnce(NewUpstream) -> NewUpstream) {
        let preset = Preset::Oidc { issuer: self.idp.issuer.clone() };
        let new = change(new_upstream(CORP, preset, &self.client_id, &self.client_secret));
        providers::add(&self.down.db.pool, &test_master_key(), new).await.unwrap();
    }

    fn down(&self) -> Browser<'_> {
        Browser { app: &self.down, http: self.http.clone() }
    }

    fn idp(&self) -> Browser<'_> {
        Browser { app: &self.idp, http: self.http.clone() }
    }

    /// An MCP client's authorization request at `down`, up to the press of the provider's
    /// button: the redirect to the provider.
    async fn press_button(&self, client_id: &str, pkce: &crate::common::flow::Pkce) -> reqwest::Response {
        let start = authorize_url(&self.down, client_id, crate::common::flow::REDIRECT, pkce, &[]);
        let res = self.down().get(&start).await;
        assert_eq!(res.status(), 303);
        let login = location(&res);
        let html = self.down().get(&login).await.text().await.unwrap();
        assert!(html.contains("Sign in with Test IdP"), "{html}");
        let form = [("csrf_token", hidden(&html, "csrf_token")), ("request", hidden(&html, "request"))];
        let res = self
            .down()
            .post_form(
                &format!("/login/upstream/{CORP}"),
                &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
        res
    }

    /// The whole journey: button, sign-in and consent at the provider, back, consent here.
    /// Returns the last answer of `down`: the redirect to the MCP client, or a refusal page.
    async fn journey(&self, client_id: &str, pkce: &crate::common::flow::Pkce) -> reqwest::Response {
        let to_idp = location(&self.press_button(client_id, pkce).await);
        assert!(to_idp.starts_with(&self.idp.issuer), "{to_idp}");
        let back = self.idp().authorize(&to_idp, "ann").await;
        assert!(back.starts_with(&format!("{}/login/upstream/{CORP}/callback", self.down.issuer)), "{back}");
        let mut res = self.down().get(&back).await;
        // Consent at `down` for the MCP client, then the redirect to it.
        if res.status() == 303 && location(&res).starts_with(&format!("{}/consent", self.down.issuer)) {
            res = self.down().consent(&location(&res), "allow").await;
        }
        res
    }
}

async fn audit_details(app: &TestApp, event: &str) -> Vec<String> {
    audit_details_at_least(app, event, 1).await
}

/// The audit writer batches: wait (bounded) until `at_least` records of `event` are there.
async fn audit_details_at_least(app: &TestApp, event: &str, at_least: usize) -> Vec<String> {
    let mut rows: Vec<(Option<String>,)> = Vec::new();
    for _ in 0..50 {
        rows = sqlx::query_as("SELECT detail FROM audit_events WHERE event = $1 ORDER BY at")
            .bind(event)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
        if rows.len() >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rows.into_iter().map(|r| r.0.unwrap_or_default()).collect()
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.db.pool).await.unwrap()
}

async fn mcp_client(app: &TestApp) -> String {
    app.add_client(ClientSpec::default()).await.0
}

/// Exchange the code an MCP client got; the access token's claims.
async fn tokens_for(app: &TestApp, client_id: &str, redirect: &str, pkce: &crate::common::flow::Pkce) -> Value {
    let code = query(redirect).remove("code").expect("a code for the MCP client");
    let (status, _, body) = app
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", crate::common::flow::REDIRECT),
                ("code_verifier", &pkce.verifier),
                ("client_id", client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    crate::common::flow::verify_jwt(app, body["access_token"].as_str().unwrap()).await
}

#[tokio::test]
async fn a_person_signs_in_through_an_openid_provider_and_gets_an_account_just_in_time() {
    let pair = Pair::start(true).await;
    pair.add_upstream(|u| NewUpstream { allowed_domains: vec!["corp.example".into()], ..u }).await;
    let client = mcp_client(&pair.down).await;
    let before = user_count(&pair.down).await;
    let pkce = pkce();
    let res = pair.journey(&client, &pkce).await;
    assert_eq!(res.status(), 303);
    let redirect = location(&res);
    assert!(redirect.starts_with(crate::common::flow::REDIRECT), "{redirect}");
    let claims = tokens_for(&pair.down, &client, &redirect, &pkce).await;
    // Tessera's own token: its issuer, its account id as sub; nothing of the provider's.
    assert_eq!(claims["iss"], pair.down.issuer);
    let ann =
        store::users::by_email(&mut pair.down.db.pool.acquire().await.unwrap(), "ann@corp.example").await.unwrap();
    assert_eq!(ann.len(), 1, "one account, created just in time");
    assert_eq!(user_count(&pair.down).await, before + 1);
    let ann = &ann[0];
    assert_eq!(claims["sub"], ann.id.to_string());
    assert_eq!((ann.username.as_str(), ann.name.as_deref(), ann.email_verified), ("ann", Some("Ann Lee"), true));
    assert!(ann.password_hash.is_none(), "no local password");
    // The password form cannot sign this account in.
    let pkce2 = crate::common::flow::pkce();
    // A second login in a fresh browser finds the same account: sub is stable.
    let again = Pair { http: crate::common::client(), ..pair };
    let res = again.journey(&client, &pkce2).await;
    let claims2 = tokens_for(&again.down, &client, &location(&res), &pkce2).await;
    assert_eq!(claims2["sub"], claims["sub"]);
    assert_eq!(user_count(&again.down).await, before + 1);
    let details = audit_details(&again.down, "login.success").await;
    assert!(details.iter().any(|d| d.contains("upstream corp, Created")), "{details:?}");
    assert!(details.iter().any(|d| d.contains("upstream corp, Linked")), "{details:?}");
}

#[tokio::test]
async fn invite_only_refuses_strangers_and_lets_the_invited_claim_their_account() {
    let pair = Pair::start(true).await;
    pair.add_upstream(|u| NewUpstream { accounts: "invite".into(), ..u }).await;
    let client = mcp_client(&pair.down).await;
    let before = user_count(&pair.down).await;
    let res = pair.journey(&client, &pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.unwrap();
    assert!(page.contains("ask an administrator to invite you"), "{page}");
    assert_eq!(user_count(&pair.down).await, before, "nothing created");
    assert!(audit_details(&pair.down, "login.federated_refused").await[0].contains("not_invited"));

    let out = admin(&pair.down.db, &["user", "add", "annie", "--email", "ANN@corp.example", "--invite"], "");
    assert!(out.contains("invited user"), "{out}");
    let pkce = pkce();
    let fresh = Pair { http: crate::common::client(), ..pair };
    let res = fresh.journey(&client, &pkce).await;
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap_or_default());
    let claims = tokens_for(&fresh.down, &client, &location(&res), &pkce).await;
    let annie = store::users::by_username(&fresh.down.db.pool, "annie").await.unwrap().unwrap();
    assert_eq!(claims["sub"], annie.id.to_string(), "the invitation's account");
    assert!(!annie.invited && annie.email_verified);
}

#[tokio::test]
async fn allowlists_refuse_other_domains_unverified_emails_and_missing_groups() {
    let pair = Pair::start(true).await;
    pair.add_upstream(|u| NewUpstream { allowed_domains: vec!["other.example".into()], ..u }).await;
    let client = mcp_client(&pair.down).await;
    let before = user_count(&pair.down).await;
    let res = pair.journey(&client, &pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("not one that may sign in here"));
    assert!(audit_details(&pair.down, "login.federated_refused").await[0].contains("email_not_allowed"));

    // Groups: a Tessera provider sends no `groups` claim, so nobody is in one.
    store::upstreams::delete(&pair.down.db.pool, CORP).await.unwrap();
    pair.add_upstream(|u| NewUpstream { required_groups: vec!["mcp-users".into()], ..u }).await;
    let res = Pair { http: crate::common::client(), ..pair }.journey(&client, &pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // An unverified email never passes a domain list.
    let unverified = Pair::start(false).await;
    unverified.add_upstream(|u| NewUpstream { allowed_domains: vec!["corp.example".into()], ..u }).await;
    let client = mcp_client(&unverified.down).await;
    let res = unverified.journey(&client, &crate::common::flow::pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(audit_details(&unverified.down, "login.federated_refused").await[0].contains("email_unverified"));
    assert_eq!(user_count(&unverified.down).await, before);
}

#[tokio::test]
async fn linking_to_an_existing_account_needs_a_verified_email_and_the_setting() {
    let pair = Pair::start(true).await;
    let local = pair.down.add_user("ann.local").await;
    let change = store::users::ProfileChange { email: Some(Some("ann@corp.example")), ..Default::default() };
    store::users::update_profile(&pair.down.db.pool, "ann.local", &change).await.unwrap();
    pair.add_upstream(|u| u).await;
    let client = mcp_client(&pair.down).await;
    let res = pair.journey(&client, &pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no linking without the setting");
    assert!(res.text().await.unwrap().contains("already exists"));

    store::upstreams::delete(&pair.down.db.pool, CORP).await.unwrap();
    pair.add_upstream(|u| NewUpstream { link_existing: true, ..u }).await;
    let pkce = pkce();
    let pair = Pair { http: crate::common::client(), ..pair };
    let res = pair.journey(&client, &pkce).await;
    let claims = tokens_for(&pair.down, &client, &location(&res), &pkce).await;
    assert_eq!(claims["sub"], local.to_string(), "linked to the existing account");

    // The same email, unverified upstream, is never linked (no takeover through an email claim).
    let unverified = Pair::start(false).await;
    unverified.down.add_user("ann.local").await;
    store::users::update_profile(&unverified.down.db.pool, "ann.local", &change).await.unwrap();
    unverified.add_upstream(|u| NewUpstream { link_existing: true, ..u }).await;
    let client = mcp_client(&unverified.down).await;
    let res = unverified.journey(&client, &crate::common::flow::pkce()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(audit_details(&unverified.down, "login.federated_refused").await[0].contains("email_unverified"));
}

#[tokio::test]
async fn a_callback_is_used_once_and_must_match_the_browsers_state() {
    let pair = Pair::start(true).await;
    pair.add_upstream(|u| u).await;
    let client = mcp_client(&pair.down).await;
    let pkce = pkce();
    let to_idp = location(&pair.press_button(&client, &pkce).await);
    let back = pair.idp().authorize(&to_idp, "ann").await;
    // Another state (a forged or swapped callback): refused, and the round trip is spent.
    let forged = back.replace(&query(&back)["state"], "forged-state");
    let res = pair.down().get(&forged).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("does not match"));
    let res = pair.down().get(&back).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "the round trip ended with the forged callback");

    // A replayed callback: the first succeeds, the second finds nothing.
    let to_idp = location(&pair.press_button(&client, &pkce).await);
    let back = pair.idp().authorize(&to_idp, "ann").await;
    assert_eq!(pair.down().get(&back).await.status(), 303);
    let res = pair.down().get(&back).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("expired or was already completed"));
    // Another browser with the callback URL (stolen from a log): nothing pending there.
    let stranger = crate::common::client();
    assert_eq!(stranger.get(&back).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
    let failures = audit_details_at_least(&pair.down, "login.federated_failed", 3).await;
    assert!(failures.len() >= 3, "{failures:?}");
}

#[tokio::test]
async fn access_denied_at_the_provider_is_a_clear_page() {
    let pair = Pair::start(true).await;
    pair.add_upstream(|u| u).await;
    let client = mcp_client(&pair.down).await;
    let to_idp = location(&pair.press_button(&client, &pkce()).await);
    // At the provider: sign in, then deny its consent.
    let idp = pair.idp();
    let res = idp.get(&to_idp).await;
    let res = idp.login(&location(&res), "ann", PASSWORD).await;
    let consent = location(&res);
    let res = idp.consent(&consent, "deny").await;
    let back = location(&res);
    assert_eq!(query(&back)["error"], "access_denied");
    let res = pair.down().get(&back).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("did not sign you in (access_denied)"));
    assert!(audit_details(&pair.down, "login.federated_failed").await[0].contains("access_denied"));
}

/// A provider played by the document server: discovery, a key set, and a token endpoint that
/// answers what the test sets.
struct FakeProvider {
    docs: DocServer,
    issuer: String,
    signing: jsonwebtoken::EncodingKey,
}

impl FakeProvider {
    async fn start() -> Self {
        let (docs, issuer) = DocServer::start().await;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
        )
        .unwrap();
        use aws_lc_rs::signature::KeyPair as _;
        use base64::Engine as _;
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        docs.set(
            "/.well-known/openid-configuration",
            Reply::json(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "id_token_signing_alg_values_supported": ["ES256"],
            })),
        );
        docs.set(
            "/jwks",
            Reply::json(json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                "x": b64(&point[1..33]), "y": b64(&point[33..65])}]})),
        );
        Self { docs, issuer, signing: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()) }
    }

    /// The token endpoint answers an ID token with these claims.
    fn answer(&self, claims: Value) {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let id_token = jsonwebtoken::encode(&header, &claims, &self.signing).unwrap();
        self.docs
            .set("/token", Reply::json(json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})));
    }
}

/// The button pressed at `down`: the provider's `state` and `nonce`.
async fn round_trip_to(down: &TestApp, http: &reqwest::Client, client: &str, name: &str) -> (String, String) {
    let browser = Browser { app: down, http: http.clone() };
    let res = browser.get(&authorize_url(down, client, crate::common::flow::REDIRECT, &pkce(), &[])).await;
    let html = browser.get(&location(&res)).await.text().await.unwrap();
    let form = [("csrf_token", hidden(&html, "csrf_token")), ("request", hidden(&html, "request"))];
    let res = browser
        .post_form(&format!("/login/upstream/{name}"), &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .await;
    let q = query(&location(&res));
    (q["state"].clone(), q.get("nonce").cloned().unwrap_or_default())
}

#[tokio::test]
async fn id_tokens_from_another_issuer_or_audience_or_with_another_nonce_are_refused() {
    let down = TestApp::spawn().await;
    down.add_resource(crate::common::flow::RESOURCE, true).await;
    let fake = FakeProvider::start().await;
    let new = new_upstream("fake", Preset::Oidc { issuer: fake.issuer.clone() }, "tessera", "s3cret");
    providers::add(&down.db.pool, &test_master_key(), new).await.unwrap();
    let client = mcp_client(&down).await;
    let now = chrono::Utc::now().timestamp();
    let good = |nonce: &str| {
        json!({"iss": fake.issuer, "aud": "tessera", "sub": "u-1", "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "x@fake.example", "email_verified": true})
    };
    type Claims<'a> = Box<dyn Fn(&str) -> Value + 'a>;
    let cases: Vec<(&str, Claims, &str)> = vec![
        (
            "another issuer",
            Box::new(|n| {
                let mut c = good(n);
                c["iss"] = json!("https://evil.example");
                c
            }),
            "failed validation",
        ),
        (
            "another audience",
            Box::new(|n| {
                let mut c = good(n);
                c["aud"] = json!("someone-else");
                c
            }),
            "failed validation",
        ),
        (
            "expired",
            Box::new(|n| {
                let mut c = good(n);
                c["exp"] = json!(now - 3600);
                c
            }),
            "failed validation",
        ),
        ("another nonce", Box::new(|_| good("replayed-nonce")), "another nonce"),
        (
            "several audiences, no azp",
            Box::new(|n| {
                let mut c = good(n);
                c["aud"] = json!(["tessera", "other"]);
                c
            }),
            "authorized party",
        ),
    ];
    let before = user_count(&down).await;
    for (what, claims, expected) in cases {
        let http = crate::common::client();
        let (state, nonce) = round_trip_to(&down, &http, &client, "fake").await;
        fake.answer(claims(&nonce));
        let res = http
            .get(format!("{}/login/upstream/fake/callback?code=c&state={state}", down.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{what}");
        let page = res.text().await.unwrap();
        assert!(page.contains(expected), "{what}: {page}");
    }
    assert_eq!(user_count(&down).await, before, "nothing created");
    // The right token signs in.
    let http = crate::common::client();
    let (state, nonce) = round_trip_to(&down, &http, &client, "fake").await;
    fake.answer(good(&nonce));
    let res =
        http.get(format!("{}/login/upstream/fake/callback?code=c&state={state}", down.issuer)).send().await.unwrap();
    assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
    // A mix-up: the callback says another issuer sent it.
    let (state, nonce) = round_trip_to(&down, &http, &client, "fake").await;
    fake.answer(good(&nonce));
    let res = http
        .get(format!(
            "{}/login/upstream/fake/callback?code=c&state={state}&iss=https%3A%2F%2Fevil.example",
            down.issuer
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_provider_that_is_down_slow_or_on_a_forbidden_address_is_a_clear_page() {
    let down = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_UPSTREAM_TIMEOUT", "1s".into())],
        ..Default::default()
    })
    .await;
    down.add_resource(crate::common::flow::RESOURCE, true).await;
    let client = mcp_client(&down).await;
    let closed = format!("http://127.0.0.1:{}", crate::common::free_port());
    let (slow, slow_issuer) = DocServer::start().await;
    slow.set("/.well-known/openid-configuration", Reply { delay: Duration::from_secs(3), ..Reply::json(json!({})) });
    let master = test_master_key();
    providers::add(&down.db.pool, &master, new_upstream("down", Preset::Oidc { issuer: closed }, "c", "s"))
        .await
        .unwrap();
    providers::add(
        &down.db.pool,
        &master,
        new_upstream("slow", Preset::Oidc { issuer: slow_issuer.clone() }, "c", "s"),
    )
    .await
    .unwrap();
    let guarded = NewUpstream {
        allow_private_network: false,
        ..new_upstream("guarded", Preset::Oidc { issuer: "https://127.0.0.1:9/x".into() }, "c", "s")
    };
    providers::add(&down.db.pool, &master, guarded).await.unwrap();
    for (name, status, text) in [
        ("down", StatusCode::GATEWAY_TIMEOUT, "could not be reached"),
        ("slow", StatusCode::GATEWAY_TIMEOUT, "no answer within 1 seconds"),
        ("guarded", StatusCode::BAD_GATEWAY, "may not be fetched"),
    ] {
        let browser = Browser { app: &down, http: crate::common::client() };
        let res = browser.get(&authorize_url(&down, &client, crate::common::flow::REDIRECT, &pkce(), &[])).await;
        let html = browser.get(&location(&res)).await.text().await.unwrap();
        let form = [("csrf_token", hidden(&html, "csrf_token")), ("request", hidden(&html, "request"))];
        let started = std::time::Instant::now();
        let res = browser
            .post_form(
                &format!("/login/upstream/{name}"),
                &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>(),
            )
            .await;
        assert_eq!(res.status(), status, "{name}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name} is cut off by the timeout");
        let page = res.text().await.unwrap();
        assert!(page.contains(text), "{name}: {page}");
    }
}

#[tokio::test]
async fn github_people_are_their_numeric_id_and_organizations_decide() {
    let down = TestApp::spawn().await;
    down.add_resource(crate::common::flow::RESOURCE, true).await;
    let (gh, web) = DocServer::start().await;
    // Shapes from docs.github.com: "Authorizing OAuth apps" (the token answer), "Get the
    // authenticated user", "List email addresses for the authenticated user", "List
    // organizations for the authenticated user".
    gh.set(
        "/login/oauth/access_token",
        Reply::json(
            json!({"access_token": "gho_test", "scope": "read:user,user:email,read:org", "token_type": "bearer"}),
        ),
    );
    gh.set(
        "/api/v3/user",
        Reply::json(json!({"login": "octocat", "id": 583231, "name": "The Octocat", "email": null})),
    );
    gh.set(
        "/api/v3/user/emails",
        Reply::json(json!([
        {"email": "octocat@github.com", "verified": true, "primary": true, "visibility": "public"},
        {"email": "other@example.com", "verified": false, "primary": false, "visibility": null}])),
    );
    gh.set("/api/v3/user/orgs", Reply::json(json!([{"login": "github", "id": 1}])));
    let preset = Preset::GitHub { web: Some(web.clone()), api: None };
    let new = NewUpstream { required_groups: vec!["acme".into()], ..new_upstream("github", preset, "Iv1.abc", "s") };
    providers::add(&down.db.pool, &test_master_key(), new).await.unwrap();
    let client = mcp_client(&down).await;

    let http = crate::common::client();
    let (state, nonce) = round_trip_to(&down, &http, &client, "github").await;
    assert!(nonce.is_empty(), "no OpenID nonce for GitHub");
    let res =
        http.get(format!("{}/login/upstream/github/callback?code=c&state={state}", down.issuer)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "not in acme");
    assert!(audit_details(&down, "login.federated_refused").await[0].contains("not_in_group"));

    gh.set("/api/v3/user/orgs", Reply::json(json!([{"login": "ACME", "id": 2}])));
    let (state, _) = round_trip_to(&down, &http, &client, "github").await;
    let res =
        http.get(format!("{}/login/upstream/github/callback?code=c&state={state}", down.issuer)).send().await.unwrap();
    assert_eq!(res.status(), 303);
    let (subject, user_id): (String, uuid::Uuid) =
        sqlx::query_as("SELECT subject, user_id FROM federated_identities WHERE upstream = 'github'")
            .fetch_one(&down.db.pool)
            .await
            .unwrap();
    assert_eq!(subject, "583231", "keyed on the numeric id, never the login or email");
    let user = store::users::by_id(&down.db.pool, user_id).await.unwrap().unwrap();
    assert_eq!((user.username.as_str(), user.email.as_deref()), ("octocat", Some("octocat@github.com")));
    assert_eq!(gh.hits("/api/v3/user/orgs"), 2);
}

#[tokio::test]
async fn with_password_login_off_only_the_providers_remain() {
    let down = TestApp::spawn_with(Options {
        settings: vec![("TESSERA_PASSWORD_LOGIN", "false".into())],
        ..Default::default()
    })
    .await;
    let f = down.fixture().await;
    let new = new_upstream("corp", Preset::Google, "id", "secret");
    providers::add(&down.db.pool, &test_master_key(), new).await.unwrap();
    let browser = Browser::new(&down);
    let res = browser.get(&authorize_url(&down, &f.client_id, &f.redirect_uri, &pkce(), &[])).await;
    let html = browser.get(&location(&res)).await.text().await.unwrap();
    assert!(html.contains("Sign in with Test IdP"));
    assert!(!html.contains("name=\"password\""), "no password form");
    let res = browser.login(&location(&res), "alice", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "the password endpoint is off too");
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_providers_with_the_secret_sealed() {
    let down = TestApp::spawn().await;
    // The CLI seals with the master key from the environment (generated here, never stored).
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut child = crate::common::tessera_bin()
        .args([
            "upstream",
            "add",
            "corp",
            "--preset",
            "entra",
            "--tenant",
            "contoso.onmicrosoft.com",
            "--client-id",
            "app-id",
            "--client-secret-stdin",
            "--allow-domain",
            "contoso.com",
            "--accounts",
            "jit",
        ])
        .env("DATABASE_URL", down.db.url())
        .env("TESSERA_MASTER_KEY", &key)
        .env("TESSERA_ISSUER", &down.issuer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"the-client-secret\n").unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let out = String::from_utf8(done.stdout).unwrap();
    assert!(out.contains(&format!("{}/login/upstream/corp/callback", down.issuer)), "{out}");
    let stored = store::upstreams::get(&down.db.pool, "corp").await.unwrap().unwrap();
    assert_eq!(stored.issuer, "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0");
    assert!(!String::from_utf8_lossy(&stored.client_secret_enc).contains("the-client-secret"), "sealed");
    let list = admin(&down.db, &["upstream", "list"], "");
    assert!(list.contains("corp") && list.contains("domains contoso.com"), "{list}");
    let err = crate::common::admin_fails(
        &down.db,
        &[
            "upstream",
            "add",
            "x",
            "--preset",
            "entra",
            "--tenant",
            "common",
            "--client-id",
            "a",
            "--client-secret-stdin",
        ],
    );
    assert!(err.contains("--tenant"), "{err}");
    admin(&down.db, &["upstream", "remove", "corp"], "");
    assert!(store::upstreams::get(&down.db.pool, "corp").await.unwrap().is_none());
}

/// The whole round trip in a real browser (headless Debian Chromium): an MCP client's
/// authorization request, Tessera's login page, the provider's button, sign-in and consent at
/// the provider (another site: 127.0.0.2), back to Tessera's consent, and the client's redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_through_the_provider_and_lands_at_the_client() {
    use crate::browser::{callback_server, chromium, wait_for, wait_for_url};
    use fantoccini::Locator;

    let pair = Pair::start(true).await;
    pair.add_upstream(|u| NewUpstream { allowed_domains: vec!["corp.example".into()], ..u }).await;
    let client = mcp_client(&pair.down).await;
    let (cb_port, mut callbacks) = callback_server().await;
    let (_driver, _profile, c) = chromium().await;

    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let p = pkce();
    c.goto(&authorize_url(&pair.down, &client, &redirect, &p, &[])).await.unwrap();
    // Tessera's login page: the provider's button beside the password form.
    let button = wait_for(&c, "form.provider button").await;
    assert_eq!(button.text().await.unwrap(), "Sign in with Test IdP");
    assert!(c.find(Locator::Css("input#password")).await.is_ok(), "the password form stays");
    button.click().await.unwrap();

    // At the provider (its own login and consent pages, its own cookies).
    wait_for_url(&c, &format!("{}/login", pair.idp.issuer)).await;
    wait_for(&c, "input#username").await.send_keys("ann").await.unwrap();
    wait_for(&c, "input#password").await.send_keys(PASSWORD).await.unwrap();
    wait_for(&c, "button.primary").await.click().await.unwrap();
    let allow = wait_for(&c, "button[name=decision][value=allow]").await;
    let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("Tessera down"), "the provider asks about Tessera: {text}");
    allow.click().await.unwrap();

    // Back at Tessera: its own consent, for the MCP client, signed in as ann.
    wait_for_url(&c, &format!("{}/consent", pair.down.issuer)).await;
    let allow = wait_for(&c, "button[name=decision][value=allow]").await;
    let text = c.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
    assert!(text.contains("Test Client"), "{text}");
    allow.click().await.unwrap();

    let landed = tokio::time::timeout(Duration::from_secs(15), callbacks.recv()).await.expect("no callback").unwrap();
    c.close().await.unwrap();
    let landed = format!("http://127.0.0.1{landed}");
    assert_eq!(query(&landed)["iss"], pair.down.issuer);
    // Tessera's token for Tessera's account, created just in time.
    let code = query(&landed).remove("code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", p.verifier.as_str()),
        ("client_id", client.as_str()),
    ];
    let (status, _, body) = pair.down.token(&form, None).await;
    assert_eq!(status, 200, "{body}");
    let claims = crate::common::flow::verify_jwt(&pair.down, body["access_token"].as_str().unwrap()).await;
    let ann =
        store::users::by_email(&mut pair.down.db.pool.acquire().await.unwrap(), "ann@corp.example").await.unwrap();
    assert_eq!(claims["sub"], ann[0].id.to_string());
}
