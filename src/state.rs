//! `AppState`: what every request shares — configuration, the database pool, the key ring and
//! precomputed documents — plus the background tasks that keep the caches fresh.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::config::{Issuer, MasterKey};
use crate::keys::{KeyError, KeyRing};
use crate::{http, notify};

/// Settings a running server needs, already validated.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub issuer: Issuer,
    pub master_key: MasterKey,
    pub access_token_ttl: Duration,
    pub key_rotation_delay: Option<Duration>,
}

/// How long verifiers may cache the JWKS (`Cache-Control: max-age`).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Allowance for clock skew between Tessera and the servers that verify its tokens.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

pub struct Inner {
    pub settings: ServerSettings,
    pub pool: PgPool,
    pub keys: KeyRing,
    /// The RFC 8414 document, serialized once.
    pub metadata: Bytes,
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
    /// Load the key ring (creating the first key if needed) and start the background tasks.
    pub async fn new(settings: ServerSettings, pool: PgPool) -> Result<Self, KeyError> {
        let grace = signing_grace(settings.access_token_ttl);
        let keys = KeyRing::load(&pool, settings.master_key.clone(), grace).await?;
        let metadata = http::metadata::document(&settings.issuer);
        let state = Self(Arc::new(Inner {
            settings,
            pool,
            keys,
            metadata,
            tasks: Default::default(),
        }));
        let listener = notify::spawn(Arc::downgrade(&state.0));
        state.track(listener);
        Ok(state)
    }

    fn track(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Re-read the signing keys (after a rotation anywhere).
    pub async fn reload_keys(&self) {
        if let Err(e) = self
            .keys
            .reload(&self.pool, signing_grace(self.settings.access_token_ttl))
            .await
        {
            tracing::error!(error = %e, "could not reload signing keys; keeping the previous set");
        }
    }

    /// Stop the background tasks (on shutdown; tests drop the state instead).
    pub async fn shutdown(&self) {
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for task in tasks {
            task.abort();
        }
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

/// A retired key stays published this long after it stopped signing: the longest access-token
/// lifetime plus clock skew, so every token it signed can still be verified.
pub fn signing_grace(longest_token_ttl: Duration) -> Duration {
    longest_token_ttl + CLOCK_SKEW
}

/// Default delay between `keys rotate` and the new key signing: long enough that verifiers
/// holding a cached JWKS have refetched it, and no shorter than the longest token lifetime.
pub fn default_rotation_delay(
    longest_token_ttl: Duration,
    configured: Option<Duration>,
) -> Duration {
    configured.unwrap_or_else(|| longest_token_ttl.max(JWKS_MAX_AGE))
}
