//! `AppState`: builds and wires everything a running server shares — settings, the database
//! pool, the key ring, the resource catalogue and derived documents, the clients, revocation,
//! audit and rate-limit handles — and runs the background tasks that keep them fresh. Only the
//! top (`cli/`, `server.rs`) and `http/` use it; the domain takes the parts it needs.

use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::catalog::resources::ResourceSet;
use crate::catalog::{discovery, resources};
use crate::clients::Clients;
use crate::clients::cimd::{CimdSettings, Fetcher};
use crate::config::{Config, Issuer, MasterKey};
use crate::grant::refresh_token::{Rotations, Successors};
use crate::grant::{self, authorization};
use crate::platform::audit::{AuditSink, RequestMeta};
use crate::platform::maintenance;
use crate::platform::maintenance::Retention;
use crate::platform::notify::{self, Listening};
use crate::platform::rate_limit::RateLimits;
use crate::signin::federation::Federation;
use crate::signin::password;
use crate::store;
use crate::store::sessions::PgSessionStore;
use crate::tokens::VerifiedCache;
use crate::tokens::keys::{self, KeyError, KeyRing};
use crate::tokens::revocation::Revocation;

/// How often expired rows and memory are pruned.
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(600);

/// Settings a running server needs, already validated: the configuration, with the issuer and
/// master key that `serve` and `dev` require (and settle) made non-optional.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub issuer: Issuer,
    pub master_key: MasterKey,
    pub cimd: CimdSettings,
    pub config: Config,
}

impl ServerSettings {
    pub fn from_config(config: &Config, issuer: Issuer, master_key: MasterKey) -> Self {
        let cimd = CimdSettings {
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

pub struct Inner {
    pub settings: ServerSettings,
    pub pool: PgPool,
    pub keys: KeyRing,
    pub resources: ArcSwap<ResourceSet>,
    /// The RFC 8414 document, serialized whenever the resources change.
    pub metadata: ArcSwap<Bytes>,
    pub sessions: PgSessionStore,
    pub clients: Clients,
    /// What makes tokens inactive.
    pub revocation: Revocation,
    /// Access tokens already verified (introspection).
    pub verified: VerifiedCache,
    /// Derives refresh tokens' successors (and holds the reuse grace window).
    pub successors: Successors,
    /// Rotates refresh tokens in batches (group commit).
    pub rotations: Rotations,
    /// Upstream identity providers' documents and the sign-in round trip.
    pub federation: Federation,
    /// The WebAuthn relying party (passkeys), when the issuer can be one.
    pub passkeys: crate::signin::passkeys::Passkeys,
    pub audit: AuditSink,
    /// Per-instance rate limits.
    pub limits: RateLimits,
    /// Whether this instance hears every change (and has reloaded after starting to).
    pub listening: Listening,
    /// One reload of the keys or the resources at a time: two overlapping reloads could
    /// otherwise finish out of order and leave the older snapshot in place.
    reloading: tokio::sync::Mutex<()>,
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
        let userinfo = settings.issuer.join("/userinfo");
        resources::ensure_userinfo(&pool, &userinfo).await?;
        let resources = ResourceSet::new(store::resources::list(&pool).await?).with_userinfo(&userinfo);
        let grace = keys::signing_grace(longest_token_ttl(&settings, &resources));
        let keys = KeyRing::load(&pool, settings.master_key.clone(), grace).await?;
        let metadata = discovery::document(&settings.issuer, settings.registration, &resources);
        password::warm_up().await;
        let listening = Listening::default();
        let audit = AuditSink::start(pool.clone());
        let fetcher = Fetcher::new(settings.cimd.clone());
        let state = Self(Arc::new(Inner {
            sessions: PgSessionStore::new(pool.clone()),
            clients: Clients::new(pool.clone(), fetcher, audit.clone(), listening.clone()),
            revocation: Revocation::new(pool.clone(), listening.clone()),
            verified: VerifiedCache::default(),
            successors: Successors::new(&settings.master_key, settings.refresh_reuse_grace),
            rotations: Rotations::new(&pool),
            federation: Federation::new(&settings.master_key, settings.issuer.as_str(), settings.upstream_timeout),
            passkeys: crate::signin::passkeys::Passkeys::new(settings.issuer.as_str()),
            limits: RateLimits::new(&settings.rate_limits, settings.registration_rate),
            audit,
            settings,
            pool: pool.clone(),
            keys,
            resources: ArcSwap::from_pointee(resources),
            metadata: ArcSwap::from_pointee(metadata),
            listening: listening.clone(),
            reloading: Default::default(),
            tasks: Default::default(),
        }));
        state.track(notify::spawn(pool, Arc::downgrade(&state.0), listening));
        state.track(spawn_maintenance(Arc::downgrade(&state.0)));
        Ok(state)
    }

    fn track(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Wait until this instance receives cross-instance invalidations (tests use it to avoid
    /// racing the listener's start).
    pub async fn until_listening(&self) {
        self.listening.until_listening().await;
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
}

impl Inner {
    /// What the authorization endpoint and its pages use, for one request.
    pub fn authorization<'a>(&'a self, meta: &'a RequestMeta) -> authorization::Parts<'a> {
        authorization::Parts {
            pool: &self.pool,
            clients: &self.clients,
            resources: self.resources.load_full(),
            audit: &self.audit,
            issuer: &self.settings.issuer,
            keys: &self.keys,
            meta,
        }
    }

    /// The login throttle's limits, for every check of something a person knows.
    pub fn login_limits(&self) -> crate::store::login_throttle::Limits {
        crate::store::login_throttle::Limits {
            per_account: self.settings.login_max_failures,
            per_source: self.settings.login_source_max_failures,
        }
    }

    /// What the grants of the token endpoint use, for one request.
    pub fn grants<'a>(&'a self, meta: &'a RequestMeta, resources: &'a ResourceSet) -> grant::Context<'a> {
        grant::Context {
            pool: &self.pool,
            keys: &self.keys,
            issuer: &self.settings.issuer,
            resources,
            revocation: &self.revocation,
            audit: &self.audit,
            refresh: grant::RefreshLifetimes {
                idle: self.settings.refresh_idle_ttl,
                max: self.settings.refresh_max_ttl,
            },
            successors: &self.successors,
            rotations: &self.rotations,
            meta,
        }
    }

    /// Re-read the signing keys (after a rotation anywhere).
    pub async fn reload_keys(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        let grace = keys::signing_grace(longest_token_ttl(&self.settings, &self.resources.load()));
        if let Err(e) = self.keys.reload(&self.pool, grace).await {
            tracing::error!(error = %e, "could not reload signing keys; keeping the previous set");
        }
    }

    /// Re-read the resources (after one was added or removed anywhere), and what derives from them.
    pub async fn reload_resources(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        match store::resources::list(&self.pool).await {
            Ok(list) => {
                let set = ResourceSet::new(list).with_userinfo(&self.settings.issuer.join("/userinfo"));
                let settings = &self.settings;
                self.metadata.store(Arc::new(discovery::document(&settings.issuer, settings.registration, &set)));
                self.resources.store(Arc::new(set));
            }
            Err(e) => tracing::error!(error = %e, "could not reload resources; keeping the previous set"),
        }
    }

    /// Prune what expired, in memory and in the database (every instance, every 10 minutes).
    pub async fn run_maintenance(&self) {
        self.limits.prune();
        self.revocation.prune();
        self.verified.prune();
        self.clients.prune();
        let keep = Retention {
            unauthorized_clients: self.settings.registration_unauthorized_ttl,
            idle_clients: self.settings.registration_idle_ttl,
            audit: self.settings.audit_retention,
        };
        match maintenance::prune_database(&self.pool, &self.audit, keep, maintenance::BUDGET).await {
            Ok(None) => tracing::debug!("another instance is pruning the database"),
            Ok(Some(report)) if !report.left.is_empty() || !report.failed.is_empty() => tracing::warn!(
                deleted = report.total(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                left = ?report.left,
                failed = ?report.failed,
                "database clean-up did not finish; the next run goes on"
            ),
            Ok(Some(report)) => tracing::debug!(
                deleted = report.total(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                by_kind = ?report.deleted,
                "database clean-up"
            ),
            Err(e) => tracing::warn!(error = %e, "database clean-up could not start"),
        }
    }
}

/// Notifications from other instances (and from admin commands) reach the caches here.
impl notify::Caches for Inner {
    async fn apply(&self, channel: &str, payload: &str) {
        match channel {
            store::keys::CHANNEL => self.reload_keys().await,
            store::grants::CHANNEL => self.revocation.grant_revoked(payload),
            store::revocation::CHANNEL => self.revocation.token_revoked(payload),
            store::clients::CHANNEL => {
                self.clients.invalidate(payload);
                self.revocation.client_changed(payload);
            }
            store::resources::CHANNEL => {
                self.reload_resources().await;
                // The longest token lifetime may have changed, and with it how long retired keys
                // stay published.
                self.reload_keys().await;
            }
            _ => {}
        }
    }

    /// Everything, after a reconnect (notifications may have been missed) and every minute.
    async fn reload_all(&self) {
        self.reload_resources().await;
        self.reload_keys().await;
        self.clients.clear();
        if let Err(e) = self.revocation.reload().await {
            tracing::error!(error = %e, "could not reload the revocation state");
        }
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

fn spawn_maintenance(state: Weak<Inner>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
        // A run that overran its period waits a whole period again, rather than starting at once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = state.upgrade() else { return };
            inner.run_maintenance().await;
        }
    })
}

fn longest_token_ttl(settings: &ServerSettings, resources: &ResourceSet) -> Duration {
    resources.max_token_ttl().unwrap_or_default().max(settings.access_token_ttl)
}

/// Handlers that need only the database take it from the state (`/readyz`).
impl axum::extract::FromRef<AppState> for sqlx::PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.pool.clone()
    }
}
