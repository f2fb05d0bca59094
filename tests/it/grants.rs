//! The grants, driven directly: a `grant::Context` built from parts (a test database, a key
//! ring, a resource set, revocation and audit handles), no server and no HTTP. Each grant's
//! error paths, and what they revoke.

use std::time::Duration;

use tessera::catalog::resources::ResourceSet;
use tessera::clients::Client;
use tessera::config::Issuer;
use tessera::grant::refresh_token::{Rotations, Successors};
use tessera::grant::{self, Context, GrantError, RefreshLifetimes};
use tessera::oauth::params::Params;
use tessera::oauth::secret::{self, Secret};
use tessera::oauth::{ErrorCode, pkce};
use tessera::platform::audit::{AuditSink, RequestMeta};
use tessera::platform::notify::Listening;
use tessera::store;
use tessera::tokens::keys::KeyRing;
use tessera::tokens::revocation::Revocation;
use uuid::Uuid;

use crate::common::{TestDb, test_master_key};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const REDIRECT: &str = "http://127.0.0.1/cb";

/// The parts a grant takes, over a fresh database with one resource, one user and two clients.
struct Parts {
    db: std::sync::Arc<TestDb>,
    keys: KeyRing,
    issuer: Issuer,
    resources: ResourceSet,
    revocation: Revocation,
    audit: AuditSink,
    successors: Successors,
    rotations: Rotations,
    meta: RequestMeta,
    user: Uuid,
    public: Client,
    service: (Client, Secret),
}

impl Parts {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let pool = &db.pool;
        let resource = store::resources::Resource {
            id: Uuid::new_v4(),
            uri: RESOURCE.into(),
            name: "Example".into(),
            scopes: [("tools:read", "Read"), ("tools:write", "Write")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            default_scopes: vec!["tools:read".into()],
            token_ttl: Duration::from_secs(600),
            is_default: true,
            credential_id: None,
            credential_secret_hash: None,
            scope_details: Default::default(),
        };
        store::resources::add(pool, &resource).await.unwrap();
        let user = Uuid::new_v4();
        assert!(store::users::insert(pool, user, "alice", None, Some("$argon2id$unused")).await.unwrap());
        let mut public = Client::new(secret::new_client_id(), "App".into(), "admin");
        public.redirect_uris = vec![REDIRECT.into()];
        public.grant_types = vec!["authorization_code".into(), "refresh_token".into()];
        store::clients::insert(pool, &public).await.unwrap();
        let secret = Secret::generate();
        let mut service = Client::new(secret::new_client_id(), "Bot".into(), "admin");
        service.token_endpoint_auth_method = "client_secret_basic".into();
        service.secret_hash = Some(secret.digest().to_vec());
        service.grant_types = vec!["client_credentials".into()];
        store::clients::insert(pool, &service).await.unwrap();
        Self {
            keys: KeyRing::load(pool, test_master_key(), Duration::from_secs(660)).await.unwrap(),
            issuer: Issuer::parse("https://auth.example.com").unwrap(),
            resources: ResourceSet::new(store::resources::list(pool).await.unwrap()),
            // Not listening: every revocation lookup goes to the database.
            revocation: Revocation::new(pool.clone(), Listening::default()),
            audit: AuditSink::start(pool.clone()),
            successors: Successors::new(&test_master_key(), Duration::from_secs(30)),
            rotations: Rotations::new(pool),
            meta: RequestMeta { request_id: "test".into(), source: [127, 0, 0, 1].into() },
            user,
            public,
            service: (service, secret),
            db,
        }
    }

    fn cx(&self) -> Context<'_> {
        Context {
            pool: &self.db.pool,
            keys: &self.keys,
            issuer: &self.issuer,
            resources: &self.resources,
            revocation: &self.revocation,
            audit: &self.audit,
            refresh: RefreshLifetimes { idle: Duration::from_secs(3600), max: Duration::from_secs(86400) },
            successors: &self.successors,
            rotations: &self.rotations,
            meta: &self.meta,
        }
    }

    /// A grant with a fresh code for the public client; (code, verifier, grant id).
    async fn code(&self) -> (String, String, Uuid) {
        let code = Secret::generate();
        let verifier = Secret::generate().expose().to_owned();
        let challenge = pkce_challenge(&verifier);
        let grant_id = Uuid::new_v4();
        let resource = self.resources.by_uri(RESOURCE).unwrap();
        let new = store::grants::NewCode {
            grant_id,
            client_id: &self.public.client_id,
            user_id: self.user,
            resource_id: resource.id,
            scopes: &["tools:read".to_owned()],
            code_hash: &code.digest(),
            redirect_uri: REDIRECT,
            redirect_uri_sent: true,
            code_challenge: &challenge,
            nonce: None,
            auth_time: None,
            sid: None,
        };
        assert!(store::grants::create_with_code(&self.db.pool, &new, None).await.unwrap());
        (code.expose().to_owned(), verifier, grant_id)
    }

    async fn standing(&self, grant: Uuid) -> bool {
        sqlx::query_scalar::<_, bool>("SELECT revoked_at IS NULL FROM grants WHERE id = $1")
            .bind(grant)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert!(pkce::verify(verifier, &challenge));
    challenge
}

fn params(pairs: &[(&str, &str)]) -> Params {
    let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    Params::parse(body.as_bytes()).unwrap()
}

/// The OAuth error code of a failed grant.
fn code_of(result: Result<grant::Issued, GrantError>) -> ErrorCode {
    match result {
        Err(GrantError::OAuth(e)) => e.code,
        Err(e) => panic!("not an OAuth error: {e}"),
        Ok(_) => panic!("the grant succeeded"),
    }
}

#[tokio::test]
async fn authorization_code_error_paths() {
    let p = Parts::new().await;
    let cx = p.cx();
    let exchange = |pairs: Vec<(&'static str, String)>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let params = params(&pairs);
        let cx = &cx;
        let client = &p.public;
        async move { grant::authorization_code::exchange(cx, client, &params).await }
    };
    assert_eq!(code_of(exchange(vec![("code_verifier", "v".into())]).await), ErrorCode::InvalidRequest);
    let unknown = vec![("code", "nope".to_owned()), ("code_verifier", "v".into())];
    assert_eq!(code_of(exchange(unknown).await), ErrorCode::InvalidGrant);

    // A wrong verifier, a wrong redirect URI or another resource spend the code and revoke its grant.
    for (bad, expected) in [
        (("code_verifier", "wrong".to_owned()), ErrorCode::InvalidGrant),
        (("redirect_uri", "http://127.0.0.1/other".to_owned()), ErrorCode::InvalidGrant),
        (("resource", "https://other.example.com/mcp".to_owned()), ErrorCode::InvalidTarget),
    ] {
        let (code, verifier, grant_id) = p.code().await;
        let mut pairs = vec![("code", code), ("code_verifier", verifier), ("redirect_uri", REDIRECT.to_owned())];
        pairs.retain(|(k, _)| *k != bad.0);
        pairs.push(bad);
        assert_eq!(code_of(exchange(pairs).await), expected);
        assert!(!p.standing(grant_id).await, "the grant of a failed exchange is revoked");
    }

    // Success, then a replay revokes everything issued from the code.
    let (code, verifier, grant_id) = p.code().await;
    let pairs =
        vec![("code", code.clone()), ("code_verifier", verifier.clone()), ("redirect_uri", REDIRECT.to_owned())];
    let issued = exchange(pairs.clone()).await.unwrap();
    assert!(issued.refresh.is_some(), "the client registered refresh_token");
    assert_eq!(issued.access.claims.aud, RESOURCE);
    assert_eq!(issued.access.claims.gid, Some(grant_id));
    assert!(p.standing(grant_id).await);
    assert_eq!(code_of(exchange(pairs).await), ErrorCode::InvalidGrant);
    assert!(!p.standing(grant_id).await, "a replayed code revokes its grant");

    // Another client cannot use the code.
    let (code, verifier, grant_id) = p.code().await;
    let pairs = params(&[("code", code.as_str()), ("code_verifier", &verifier), ("redirect_uri", REDIRECT)]);
    let other = grant::authorization_code::exchange(&cx, &p.service.0, &pairs).await;
    assert_eq!(code_of(other), ErrorCode::InvalidGrant);
    assert!(p.standing(grant_id).await, "a code presented by another client is not spent");
}

#[tokio::test]
async fn refresh_token_error_paths() {
    let p = Parts::new().await;
    let cx = p.cx();
    let (code, verifier, grant_id) = p.code().await;
    let first = params(&[("code", code.as_str()), ("code_verifier", &verifier), ("redirect_uri", REDIRECT)]);
    let issued = grant::authorization_code::exchange(&cx, &p.public, &first).await.unwrap();
    let refresh = issued.refresh.unwrap().expose().to_owned();
    let rotate = |pairs: &[(&str, &str)]| {
        let params = params(pairs);
        let cx = &cx;
        let client = &p.public;
        async move { grant::refresh_token::exchange(cx, client, &params).await }
    };
    assert_eq!(code_of(rotate(&[]).await), ErrorCode::InvalidRequest);
    assert_eq!(code_of(rotate(&[("refresh_token", "unknown")]).await), ErrorCode::InvalidGrant);
    let widen = [("refresh_token", refresh.as_str()), ("scope", "tools:read tools:write")];
    assert_eq!(code_of(rotate(&widen).await), ErrorCode::InvalidScope);
    let elsewhere = [("refresh_token", refresh.as_str()), ("resource", "https://other.example.com/mcp")];
    assert_eq!(code_of(rotate(&elsewhere).await), ErrorCode::InvalidTarget);
    assert!(p.standing(grant_id).await, "refused narrowing and targeting revoke nothing");

    // Rotation. Within the grace window the old token again gets the same successor...
    let rotated = rotate(&[("refresh_token", refresh.as_str())]).await.unwrap();
    let next = rotated.refresh.unwrap().expose().to_owned();
    assert_ne!(next, refresh);
    let again = rotate(&[("refresh_token", refresh.as_str())]).await.unwrap();
    assert_eq!(again.refresh.unwrap().expose(), next, "a retried refresh gets the same successor");
    assert!(p.standing(grant_id).await);
    // ...until the successor is used: then the old token is theft, and the grant is revoked.
    let last = rotate(&[("refresh_token", next.as_str())]).await.unwrap().refresh.unwrap().expose().to_owned();
    assert_eq!(code_of(rotate(&[("refresh_token", refresh.as_str())]).await), ErrorCode::InvalidGrant);
    assert!(!p.standing(grant_id).await, "reuse of a rotated token revokes the grant");
    assert_eq!(code_of(rotate(&[("refresh_token", last.as_str())]).await), ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn client_credentials_error_paths() {
    let p = Parts::new().await;
    let cx = p.cx();
    let (service, _) = &p.service;
    let run = |client: &Client, pairs: &[(&str, &str)]| {
        let params = params(pairs);
        let cx = &cx;
        let client = client.clone();
        async move { grant::client_credentials::exchange(cx, &client, &params).await }
    };
    assert_eq!(code_of(run(&p.public, &[]).await), ErrorCode::UnauthorizedClient, "public clients may not");
    assert_eq!(code_of(run(service, &[("scope", "tools:admin")]).await), ErrorCode::InvalidScope);
    assert_eq!(code_of(run(service, &[("scope", "offline_access")]).await), ErrorCode::InvalidScope);
    let unknown = [("resource", "https://other.example.com/mcp")];
    assert_eq!(code_of(run(service, &unknown).await), ErrorCode::InvalidTarget);
    let mut limited = service.clone();
    limited.allowed_resources = vec![Uuid::new_v4()];
    assert_eq!(code_of(run(&limited, &[]).await), ErrorCode::InvalidTarget, "the default is not allowed to it");
    let issued = run(service, &[("scope", "tools:write")]).await.unwrap();
    assert_eq!(issued.access.claims.sub, service.client_id);
    assert_eq!(issued.access.claims.scope, "tools:write");
    assert!(issued.refresh.is_none());
    p.audit.shutdown().await;
}

/// The rotation statement's own pool plans every statement afresh (a generic plan cached while
/// the tables were small would keep scanning them once grown), on the same database; the main
/// pool keeps PostgreSQL's default.
#[tokio::test]
async fn the_rotation_pool_plans_afresh_on_the_same_database() {
    let db = TestDb::new().await;
    let pool = store::custom_plans(&db.pool, 2);
    let setting = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, String>("SELECT current_setting('plan_cache_mode') || ' ' || current_database()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(setting(pool.clone()).await, format!("force_custom_plan {}", db.name));
    assert_eq!(setting(db.pool.clone()).await, format!("auto {}", db.name));
    pool.close().await;
}
