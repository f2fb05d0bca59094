//! What makes an access token inactive, and revoking: each instance remembers the revoked
//! `jti`s (all of them, loaded at start), and which grants stand and which clients exist (learned
//! on first use), so introspection answers without a database round trip. Triggers in PostgreSQL
//! announce every change on `LISTEN/NOTIFY` channels; the listener applies them here within
//! moments. While the listener is disconnected, notifications may be lost, so lookups go to the
//! database instead (fail closed), and everything learned is forgotten when it reconnects.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::PgPool;
use uuid::Uuid;

use crate::platform::batch::Batcher;
use crate::platform::notify::Listening;
use crate::store::revocation as store;
use crate::tokens::AccessClaims;

/// Beyond this many remembered grants or clients, forget them all (they are re-learned).
const MAX_ENTRIES: usize = 200_000;
/// Revocations in flight at once per instance, each a batch of at most this many (group commit:
/// see [`crate::platform::batch`]).
const BATCH_WORKERS: usize = 2;
const BATCH_MAX: usize = 64;

/// A refresh token's digest, the client presenting it, and the reason to record.
type RefreshRevocation = (Vec<u8>, String, String);

pub struct Revocation {
    pool: PgPool,
    listening: Listening,
    /// Revoked access tokens: jti -> expiry (Unix seconds).
    jtis: RwLock<HashMap<String, i64>>,
    /// Grant -> whether it stands.
    grants: RwLock<HashMap<Uuid, bool>>,
    /// Client -> whether it exists.
    clients: RwLock<HashMap<String, bool>>,
    /// Bumped on every client change, so an answer read from the database before a change is
    /// not remembered after it.
    client_epoch: std::sync::atomic::AtomicU64,
    /// Revocations by refresh token, written in batches.
    by_refresh: Batcher<RefreshRevocation, Result<Option<Uuid>, sqlx::Error>>,
    /// Access tokens put on the deny list (jti, expiry), written in batches.
    by_jti: Batcher<(String, i64), Result<(), sqlx::Error>>,
}

/// Remember `value`; with `keep_existing`, an entry already there wins (a revoked grant never
/// becomes standing again, so a notification that raced a database read must not be undone).
fn remember<K: std::hash::Hash + Eq>(map: &RwLock<HashMap<K, bool>>, key: K, value: bool, keep_existing: bool) {
    if let Ok(mut m) = map.write() {
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        if keep_existing {
            m.entry(key).or_insert(value);
        } else {
            m.insert(key, value);
        }
    }
}

fn recall<K, Q>(map: &RwLock<HashMap<Q, bool>>, key: &K) -> Option<bool>
where
    K: std::hash::Hash + Eq + ?Sized,
    Q: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    map.read().ok()?.get(key).copied()
}

impl Revocation {
    pub fn new(pool: PgPool, listening: Listening) -> Self {
        Self {
            listening,
            jtis: RwLock::default(),
            grants: RwLock::default(),
            clients: RwLock::default(),
            client_epoch: Default::default(),
            by_refresh: refresh_batcher(&pool),
            by_jti: jti_batcher(&pool),
            pool,
        }
    }

    /// Whether a verified token is still active: its jti not revoked, its grant standing (or,
    /// for `client_credentials`, its client still registered).
    pub async fn is_active(&self, claims: &AccessClaims) -> Result<bool, sqlx::Error> {
        if self.jti_revoked(&claims.jti).await? {
            return Ok(false);
        }
        match claims.gid {
            Some(grant) => self.grant_standing(grant).await,
            None => self.client_exists(&claims.client_id).await,
        }
    }

    /// Revoke a grant. This instance forgets it at once (RFC 7009 §2.2: immediately); the
    /// others hear of it through the trigger's notification.
    pub async fn revoke_grant(&self, grant_id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
        let revoked = crate::store::grants::revoke(&self.pool, grant_id, reason).await?;
        self.grant_revoked(&grant_id.to_string());
        Ok(revoked)
    }

    /// Revoke the grant of a refresh token issued to `client_id`; its id, or `None` when the
    /// token is unknown, another client's, or its grant already revoked.
    pub async fn revoke_by_refresh_token(
        &self,
        token_hash: &[u8],
        client_id: &str,
        reason: &str,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        let request = (token_hash.to_vec(), client_id.to_owned(), reason.to_owned());
        let revoked = match self.by_refresh.submit(request).await {
            Ok(answer) => answer?,
            Err((hash, client, reason)) => {
                crate::store::grants::revoke_by_refresh_token(&self.pool, &hash, &client, &reason).await?
            }
        };
        if let Some(grant_id) = revoked {
            self.grant_revoked(&grant_id.to_string());
        }
        Ok(revoked)
    }

    /// Put an access token on the deny list, here at once and elsewhere by notification.
    pub async fn revoke_access_token(&self, jti: &str, exp: i64) -> Result<(), sqlx::Error> {
        match self.by_jti.submit((jti.to_owned(), exp)).await {
            Ok(answer) => answer?,
            Err((jti, exp)) => store::revoke_jti(&self.pool, &jti, expiry(exp)).await?,
        }
        self.token_revoked(&format!("{jti} {exp}"));
        Ok(())
    }

    /// Load the deny list and forget everything learned (at start and after a reconnect).
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let leeway = crate::tokens::CLOCK_SKEW_LEEWAY as f64;
        let jtis: HashMap<String, i64> = store::revoked_jtis(&self.pool, leeway).await?.into_iter().collect();
        if let Ok(mut m) = self.jtis.write() {
            *m = jtis;
        }
        if let Ok(mut m) = self.grants.write() {
            m.clear();
        }
        if let Ok(mut m) = self.clients.write() {
            m.clear();
        }
        Ok(())
    }

    /// A grant was revoked or deleted.
    pub fn grant_revoked(&self, payload: &str) {
        if let Ok(id) = payload.parse::<Uuid>() {
            remember(&self.grants, id, false, false);
        }
    }

    /// An access token was revoked (payload `jti exp`).
    pub fn token_revoked(&self, payload: &str) {
        let Some((jti, exp)) = payload.rsplit_once(' ') else { return };
        let exp = exp.parse().unwrap_or(i64::MAX);
        if let Ok(mut m) = self.jtis.write() {
            m.insert(jti.to_owned(), exp);
        }
    }

    /// A client was added, changed or deleted: learn it again.
    pub fn client_changed(&self, client_id: &str) {
        self.client_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut m) = self.clients.write() {
            m.remove(client_id);
        }
    }

    /// Memory is trusted only while the listener is connected.
    async fn jti_revoked(&self, jti: &str) -> Result<bool, sqlx::Error> {
        if self.listening.is_listening() {
            return Ok(self.jtis.read().map(|m| m.contains_key(jti)).unwrap_or(true));
        }
        store::is_jti_revoked(&self.pool, jti).await
    }

    async fn grant_standing(&self, grant_id: Uuid) -> Result<bool, sqlx::Error> {
        let trusted = self.listening.is_listening();
        if trusted && let Some(standing) = recall(&self.grants, &grant_id) {
            return Ok(standing);
        }
        let standing = store::grant_standing(&self.pool, grant_id).await?;
        if trusted {
            remember(&self.grants, grant_id, standing, true);
        }
        Ok(standing)
    }

    async fn client_exists(&self, client_id: &str) -> Result<bool, sqlx::Error> {
        let trusted = self.listening.is_listening();
        if trusted && let Some(exists) = recall(&self.clients, client_id) {
            return Ok(exists);
        }
        let epoch = self.client_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let exists = store::client_exists(&self.pool, client_id).await?;
        if trusted && self.client_epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch {
            remember(&self.clients, client_id.to_owned(), exists, false);
        }
        Ok(exists)
    }

    /// Forget revoked tokens that have expired anyway (and that no instance would accept any
    /// more, whatever the clock skew between them).
    pub fn prune(&self) {
        let now = chrono::Utc::now().timestamp();
        if let Ok(mut m) = self.jtis.write() {
            m.retain(|_, exp| *exp + crate::tokens::CLOCK_SKEW_LEEWAY > now);
        }
    }
}

fn expiry(exp: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now)
}

/// Revocations by refresh token in one statement per batch; a failed batch one by one.
fn refresh_batcher(pool: &PgPool) -> Batcher<RefreshRevocation, Result<Option<Uuid>, sqlx::Error>> {
    let pool = pool.clone();
    Batcher::start(BATCH_WORKERS, BATCH_MAX, move |requests: Vec<RefreshRevocation>| {
        let pool = pool.clone();
        async move {
            match crate::store::grants::revoke_by_refresh_tokens(&pool, &requests).await {
                Ok(revoked) => revoked.into_iter().map(Ok).collect(),
                Err(e) if let Some(each) = crate::platform::batch::unreachable_for_each(&e, requests.len()) => {
                    each.into_iter().map(Err).collect()
                }
                Err(e) => {
                    tracing::debug!(error = %e, "batched revocation failed; revoking one by one");
                    let one_by_one = requests.iter().map(|(hash, client, reason)| {
                        crate::store::grants::revoke_by_refresh_token(&pool, hash, client, reason)
                    });
                    futures_util::future::join_all(one_by_one).await
                }
            }
        }
    })
}

/// Access-token revocations in one statement per batch; a failed batch one by one.
fn jti_batcher(pool: &PgPool) -> Batcher<(String, i64), Result<(), sqlx::Error>> {
    let pool = pool.clone();
    Batcher::start(BATCH_WORKERS, BATCH_MAX, move |requests: Vec<(String, i64)>| {
        let pool = pool.clone();
        async move {
            let jtis: Vec<String> = requests.iter().map(|(jti, _)| jti.clone()).collect();
            let expiries: Vec<_> = requests.iter().map(|(_, exp)| expiry(*exp)).collect();
            match store::revoke_jtis(&pool, &jtis, &expiries).await {
                Ok(()) => requests.iter().map(|_| Ok(())).collect(),
                Err(e) if let Some(each) = crate::platform::batch::unreachable_for_each(&e, requests.len()) => {
                    each.into_iter().map(Err).collect()
                }
                Err(e) => {
                    tracing::debug!(error = %e, "batched revocation failed; revoking one by one");
                    let one_by_one = requests.iter().map(|(jti, exp)| store::revoke_jti(&pool, jti, expiry(*exp)));
                    futures_util::future::join_all(one_by_one).await
                }
            }
        }
    })
}
