//! `AppState`: what every request shares — settings, the database pool, the key ring, the
//! resource catalogue and precomputed documents — plus the background tasks that keep the
//! caches fresh.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use std::net::IpAddr;

use crate::config::{Config, Issuer, MasterKey};
use crate::keys::{KeyError, KeyRing};
use crate::resources::ResourceSet;
use crate::security::rate_limit::Limiter;
use crate::store::sessions::PgSessionStore;
use crate::{http, notify, password, store};

/// Settings a running server needs, already validated: the configuration, with the issuer and
/// master key that `serve` and `dev` require (and settle) made non-optional.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub issuer: Issuer,
    pub master_key: MasterKey,
    pub cimd: crate::cimd::CimdSettings,
    pub config: Config,
}

impl ServerSettings {
    pub fn from_config(config: &Config, issuer: Issuer, master_key: MasterKey) -> Self {
        let cimd = crate::cimd::CimdSettings {
            allow_loopback: config.cimd_allow_loopback.unwrap_or(false),
            allowed_ports: config.cimd_allowed_ports.clone(),
            fetches_per_minute: config.cimd_fetches_per_minute,
        };
        Self { issuer, master_key, cimd, config: config.clone() }
    }
}

/// Every other setting reads straight from the configuration.
impl Deref for ServerSettings {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.config
    }
}

/// How long verifiers may cache the JWKS (`Cache-Control: max-age`).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Allowance for clock skew between Tessera and the servers that verify its tokens.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

pub struct Inner {
    pub settings: ServerSettings,
    pub pool: PgPool,
    pub keys: KeyRing,
    pub resources: ArcSwap<ResourceSet>,
    /// The RFC 8414 document, serialized whenever the resources change.
    pub metadata: ArcSwap<Bytes>,
    pub sessions: PgSessionStore,
    /// Client ID metadata document fetcher (per-host limits, in-flight de-duplication).
    pub cimd: crate::cimd::Fetcher,
    /// Registrations per source address.
    pub registration_limiter: Limiter<IpAddr>,
    /// Clients whose `last_used_at` this instance updated recently (so the token path writes it
    /// at most about hourly per client).
    pub(crate) recently_used: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The audit log.
    pub audit: crate::audit::AuditSink,
    /// Per-instance rate limits.
    pub limits: crate::security::rate_limit::RateLimits,
    /// Clients recently looked up.
    pub clients: crate::clients::ClientCache,
    /// What makes tokens inactive.
    pub revocation: crate::revocation::RevocationCache,
    /// Access tokens already verified (introspection).
    pub verified: crate::tokens::VerifiedCache,
    /// True once this instance listens for cache invalidations (and has reloaded after starting to).
    pub(crate) listening: tokio::sync::watch::Sender<bool>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Load the key ring (creating the first key if needed) and the resources, and start the
    /// background tasks.
    pub async fn new(settings: ServerSettings, pool: PgPool) -> Result<Self, KeyError> {
        let resources = ResourceSet::new(store::resources::list(&pool).await?);
        let grace = signing_grace(longest_token_ttl(&settings, &resources));
        let keys = KeyRing::load(&pool, settings.master_key.clone(), grace).await?;
        let metadata = http::metadata::document(&settings, &resources);
        password::warm_up().await;
        let state = Self(Arc::new(Inner {
            sessions: PgSessionStore::new(pool.clone()),
            cimd: crate::cimd::Fetcher::new(settings.cimd.clone()),
            registration_limiter: Limiter::new(settings.registration_rate.0, settings.registration_rate.1),
            recently_used: Default::default(),
            clients: Default::default(),
            revocation: Default::default(),
            verified: Default::default(),
            audit: crate::audit::AuditSink::start(pool.clone()),
            limits: crate::security::rate_limit::RateLimits::new(&settings.rate_limits),
            settings,
            pool,
            keys,
            resources: ArcSwap::from_pointee(resources),
            metadata: ArcSwap::from_pointee(metadata),
            listening: tokio::sync::watch::Sender::new(false),
            tasks: Default::default(),
        }));
        state.track(notify::spawn(Arc::downgrade(&state.0)));
        state.track(crate::maintenance::spawn(Arc::downgrade(&state.0)));
        Ok(state)
    }

    fn track(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Re-read the signing keys (after a rotation anywhere).
    pub async fn reload_keys(&self) {
        let grace = signing_grace(longest_token_ttl(&self.settings, &self.resources.load()));
        if let Err(e) = self.keys.reload(&self.pool, grace).await {
            tracing::error!(error = %e, "could not reload signing keys; keeping the previous set");
        }
    }

    /// Re-read the resources (after one was added or removed anywhere), and what derives from them.
    pub async fn reload_resources(&self) {
        match store::resources::list(&self.pool).await {
            Ok(list) => {
                let set = ResourceSet::new(list);
                self.metadata.store(Arc::new(http::metadata::document(&self.settings, &set)));
                self.resources.store(Arc::new(set));
            }
            Err(e) => tracing::error!(error = %e, "could not reload resources; keeping the previous set"),
        }
    }

    /// Whether this instance hears every change right now (so its caches are current).
    pub fn is_listening(&self) -> bool {
        *self.listening.borrow()
    }

    /// Forget every cached client and what was learned about revocation, and reload the deny
    /// list (after the listener reconnects: notifications may have been missed).
    pub async fn reload_revocation(&self) {
        self.clients.clear();
        if let Err(e) = self.revocation.reload(&self.pool).await {
            tracing::error!(error = %e, "could not reload the revocation state");
        }
    }

    /// Wait until this instance receives cross-instance invalidations (tests use it to avoid
    /// racing the listener's start).
    pub async fn until_listening(&self) {
        let mut rx = self.listening.subscribe();
        let _ = rx.wait_for(|listening| *listening).await;
    }

    /// Revoke a grant. This instance forgets it at once (RFC 7009 §2.2: immediately); the
    /// others hear of it through the trigger's notification.
    pub async fn revoke_grant(&self, grant_id: uuid::Uuid, reason: &str) -> Result<bool, sqlx::Error> {
        let revoked = store::grants::revoke(&self.pool, grant_id, reason).await?;
        self.revocation.grant_revoked(&grant_id.to_string());
        Ok(revoked)
    }

    /// Put an access token on the deny list, here at once and elsewhere by notification.
    pub async fn revoke_access_token(&self, jti: &str, exp: i64) -> Result<(), sqlx::Error> {
        let expires_at = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(chrono::Utc::now);
        store::revocation::revoke_jti(&self.pool, jti, expires_at).await?;
        self.revocation.token_revoked(&format!("{jti} {exp}"));
        Ok(())
    }

    /// Delete a client; this instance forgets it at once.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, sqlx::Error> {
        let deleted = store::clients::delete(&self.pool, client_id).await?;
        self.clients.invalidate(client_id);
        self.revocation.client_changed(client_id);
        Ok(deleted)
    }

    /// Note that a client obtained a token: updates `last_used_at` in the background, at most
    /// about once an hour per client and instance, so the token path never waits for it.
    pub fn client_used(&self, client: &crate::clients::Client) {
        const EVERY: Duration = Duration::from_secs(3600);
        let fresh_in_db = client.last_used_at.is_some_and(|t| chrono::Utc::now() - t < chrono::Duration::hours(1));
        if fresh_in_db {
            return;
        }
        let Ok(mut recent) = self.recently_used.lock() else { return };
        let now = std::time::Instant::now();
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
                store::clients::mark_authorized(&pool, &client_id).await
            } else {
                store::clients::mark_used(&pool, &client_id).await
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "could not record client use");
            }
        });
    }

    /// Stop the background tasks and store every queued audit record (on shutdown; tests drop
    /// the state instead).
    pub async fn shutdown(&self) {
        let tasks = self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for task in tasks {
            task.abort();
        }
        self.audit.shutdown().await;
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Self> {
        weak.upgrade().map(Self)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

fn longest_token_ttl(settings: &ServerSettings, resources: &ResourceSet) -> Duration {
    resources.max_token_ttl().unwrap_or_default().max(settings.access_token_ttl)
}

/// A retired key stays published this long after it stopped signing: the longest access-token
/// lifetime plus clock skew, so every token it signed can still be verified.
pub fn signing_grace(longest_token_ttl: Duration) -> Duration {
    longest_token_ttl + CLOCK_SKEW
}

/// Default delay between `keys rotate` and the new key signing: long enough that verifiers
/// holding a cached JWKS have refetched it, and no shorter than the longest token lifetime.
pub fn default_rotation_delay(longest_token_ttl: Duration, configured: Option<Duration>) -> Duration {
    configured.unwrap_or_else(|| longest_token_ttl.max(JWKS_MAX_AGE))
}
