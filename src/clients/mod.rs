//! Finding the client a request names: a registered client, or one described by a client ID
//! metadata document (fetched and cached by [`cimd`]). Clients are remembered in memory
//! while this instance hears every change (a trigger announces them), so the token endpoint
//! usually finds its client without a database round trip. Also: deleting a client, and noting
//! when one was last used.

pub mod cimd;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::clients::cimd::CimdError;
use crate::platform::audit::AuditSink;
use crate::platform::notify::Listening;
pub use crate::store::clients::Client;
use crate::tokens::revocation::Revocation;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Document(#[from] CimdError),
}

const MAX_CACHED: usize = 100_000;

/// Clients by id. `epoch` moves on every change, so a row read before a change is not cached after it.
#[derive(Default)]
struct ClientCache {
    map: RwLock<HashMap<String, Arc<Client>>>,
    epoch: AtomicU64,
}

impl ClientCache {
    fn get(&self, client_id: &str) -> Option<Arc<Client>> {
        self.map.read().ok()?.get(client_id).cloned()
    }

    fn insert(&self, client: Arc<Client>, epoch: u64) {
        if let Ok(mut map) = self.map.write()
            && self.epoch.load(Ordering::SeqCst) == epoch
        {
            if map.len() >= MAX_CACHED {
                map.clear();
            }
            map.insert(client.client_id.clone(), client);
        }
    }

    fn invalidate(&self, client_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut map) = self.map.write() {
            map.remove(client_id);
        }
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}

/// Every client lookup goes through here: registered clients from the database (remembered
/// while this instance hears every change) and metadata-document clients through the fetcher.
pub struct Clients {
    cache: ClientCache,
    cimd: cimd::Fetcher,
    pool: PgPool,
    audit: AuditSink,
    listening: Listening,
    /// Clients whose `last_used_at` this instance updated recently (so the token path writes it
    /// at most about hourly per client).
    recently_used: Mutex<HashMap<String, Instant>>,
}

impl Clients {
    pub fn new(pool: PgPool, cimd: cimd::Fetcher, audit: AuditSink, listening: Listening) -> Self {
        Self { cache: ClientCache::default(), cimd, pool, audit, listening, recently_used: Mutex::default() }
    }

    /// The client with this id, if any. A metadata document that cannot be used is an error,
    /// not "unknown", so the person sees why.
    pub async fn find(&self, client_id: &str) -> Result<Option<Arc<Client>>, LookupError> {
        if client_id.is_empty() || client_id.len() > 2048 {
            return Ok(None);
        }
        let trusted = self.listening.is_listening();
        let document = cimd::is_document_url(client_id);
        if trusted && let Some(client) = self.cache.get(client_id) {
            let fresh = !document || client.document_expires_at.is_some_and(|t| t > chrono::Utc::now());
            if fresh {
                return Ok(Some(client));
            }
        }
        let epoch = self.cache.epoch.load(Ordering::SeqCst);
        let client = if document {
            Some(Arc::new(self.cimd.resolve(&self.pool, &self.audit, client_id).await?))
        } else {
            crate::store::clients::get(&self.pool, client_id).await?.map(Arc::new)
        };
        if trusted && let Some(client) = &client {
            self.cache.insert(client.clone(), epoch);
        }
        Ok(client)
    }

    /// A client changed or was deleted (here or, by notification, elsewhere).
    pub fn invalidate(&self, client_id: &str) {
        self.cache.invalidate(client_id);
    }

    /// Forget every client (after the listener reconnects: notifications may have been missed).
    pub fn clear(&self) {
        self.cache.clear();
    }

    /// Delete a client; this instance forgets it (and its tokens' standing) at once.
    pub async fn delete(&self, revocation: &Revocation, client_id: &str) -> Result<bool, sqlx::Error> {
        let deleted = crate::store::clients::delete(&self.pool, client_id).await?;
        self.invalidate(client_id);
        revocation.client_changed(client_id);
        Ok(deleted)
    }

    /// Note that a client obtained a token: updates `last_used_at` in the background, at most
    /// about once an hour per client and instance, so the token path never waits for it.
    pub fn used(&self, client: &Client) {
        const EVERY: Duration = Duration::from_secs(3600);
        let fresh_in_db = client.last_used_at.is_some_and(|t| chrono::Utc::now() - t < chrono::Duration::hours(1));
        if fresh_in_db {
            return;
        }
        let Ok(mut recent) = self.recently_used.lock() else { return };
        let now = Instant::now();
        if recent.get(&client.client_id).is_some_and(|t| now.duration_since(*t) < EVERY) {
            return;
        }
        if recent.len() > 100_000 {
            recent.retain(|_, t| now.duration_since(*t) < EVERY);
        }
        recent.insert(client.client_id.clone(), now);
        drop(recent);
        let pool = self.pool.clone();
        let client_id = client.client_id.clone();
        let first = client.first_authorized_at.is_none() && client.is_self_registered();
        tokio::spawn(async move {
            let done = if first {
                crate::store::clients::mark_authorized(&pool, &client_id).await
            } else {
                crate::store::clients::mark_used(&pool, &client_id).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not record client use");
            }
        });
    }

    /// Forget fetch limits that have recovered.
    pub fn prune(&self) {
        self.cimd.prune();
    }
}
