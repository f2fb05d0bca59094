//! Each instance's memory of what makes a token inactive, so introspection answers without a
//! database round trip: the revoked `jti`s (all of them, loaded at start), and which grants
//! stand and which clients exist (learned on first use). Triggers in PostgreSQL announce every
//! change on `LISTEN/NOTIFY` channels; the listener applies them here within moments. While the
//! listener is disconnected, notifications may be lost, so lookups go to the database instead
//! (fail closed), and everything learned is forgotten when it reconnects.

use std::collections::HashMap;
use std::sync::RwLock;

use sqlx::PgPool;
use uuid::Uuid;

use crate::store::revocation as store;

/// Beyond this many remembered grants or clients, forget them all (they are re-learned).
const MAX_ENTRIES: usize = 200_000;

#[derive(Default)]
pub struct RevocationCache {
    /// Revoked access tokens: jti -> expiry (Unix seconds).
    jtis: RwLock<HashMap<String, i64>>,
    /// Grant -> whether it stands.
    grants: RwLock<HashMap<Uuid, bool>>,
    /// Client -> whether it exists.
    clients: RwLock<HashMap<String, bool>>,
    /// Bumped on every client change, so an answer read from the database before a change is
    /// not remembered after it.
    client_epoch: std::sync::atomic::AtomicU64,
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

impl RevocationCache {
    /// Load the deny list and forget everything learned (at start and after a reconnect).
    pub async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let jtis: HashMap<String, i64> = store::revoked_jtis(pool).await?.into_iter().collect();
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

    /// `trusted`: the listener is connected, so memory is current.
    pub async fn jti_revoked(&self, pool: &PgPool, jti: &str, trusted: bool) -> Result<bool, sqlx::Error> {
        if trusted {
            return Ok(self.jtis.read().map(|m| m.contains_key(jti)).unwrap_or(true));
        }
        store::is_jti_revoked(pool, jti).await
    }

    pub async fn grant_standing(&self, pool: &PgPool, grant_id: Uuid, trusted: bool) -> Result<bool, sqlx::Error> {
        if trusted && let Some(standing) = recall(&self.grants, &grant_id) {
            return Ok(standing);
        }
        let standing = store::grant_standing(pool, grant_id).await?;
        if trusted {
            remember(&self.grants, grant_id, standing, true);
        }
        Ok(standing)
    }

    pub async fn client_exists(&self, pool: &PgPool, client_id: &str, trusted: bool) -> Result<bool, sqlx::Error> {
        if trusted && let Some(exists) = recall(&self.clients, client_id) {
            return Ok(exists);
        }
        let epoch = self.client_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let exists = store::client_exists(pool, client_id).await?;
        if trusted && self.client_epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch {
            remember(&self.clients, client_id.to_owned(), exists, false);
        }
        Ok(exists)
    }

    /// Forget revoked tokens that have expired anyway.
    pub fn prune(&self) {
        let now = chrono::Utc::now().timestamp();
        if let Ok(mut m) = self.jtis.write() {
            m.retain(|_, exp| *exp > now);
        }
    }
}
