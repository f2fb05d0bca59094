//! Cross-instance cache invalidation: one `LISTEN` connection per instance. A notification on a
//! cache's channel is handed to the [`Caches`] that own the caches. After a reconnect, or every
//! minute, every cache is reloaded, because notifications sent while disconnected are lost.
//! [`Listening`] tells the caches whether they are current.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store;

const PERIODIC_RELOAD: Duration = Duration::from_secs(60);

/// Every channel a trigger or an admin command announces changes on.
pub const CHANNELS: [&str; 5] = [
    store::keys::CHANNEL,
    store::resources::CHANNEL,
    store::clients::CHANNEL,
    store::grants::CHANNEL,
    store::revocation::CHANNEL,
];

/// Whether this instance hears every change right now, so what it remembers is current. While it
/// does not, caches that must never be stale ask the database instead (fail closed).
#[derive(Clone, Default)]
pub struct Listening(Arc<watch::Sender<bool>>);

impl Listening {
    pub fn is_listening(&self) -> bool {
        *self.0.borrow()
    }

    fn set(&self, listening: bool) {
        self.0.send_replace(listening);
    }

    /// Wait until the listener runs (tests use it to avoid racing its start).
    pub async fn until_listening(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|listening| *listening).await;
    }
}

/// What owns the caches: applies one notification, or reloads everything.
pub trait Caches: Send + Sync + 'static {
    fn apply(&self, channel: &str, payload: &str) -> impl Future<Output = ()> + Send;
    fn reload_all(&self) -> impl Future<Output = ()> + Send;
}

/// Listen until `caches` is dropped.
pub fn spawn<C: Caches>(pool: PgPool, caches: Weak<C>, listening: Listening) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut listener = match connect(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    if caches.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            backoff = Duration::from_millis(200);
            if !reload_all(&caches).await {
                return;
            }
            listening.set(true);
            let gone = listen(&mut listener, &caches).await;
            // Not listening until the reconnect: notifications sent meanwhile are lost.
            listening.set(false);
            if gone {
                return;
            }
        }
    })
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection must end `listen` at once, so the caches stop trusting memory. By default
    // sqlx first reconnects inside `try_recv`, retrying for up to the pool's acquire timeout (5 s)
    // while `Listening` still says true: a revocation committed once the database is back, before
    // that reconnect, would be answered from memory.
    listener.eager_reconnect(false);
    listener.listen_all(CHANNELS).await?;
    Ok(listener)
}

/// Apply notifications until the connection drops (`false`) or the caches are gone (`true`).
async fn listen<C: Caches>(listener: &mut PgListener, caches: &Weak<C>) -> bool {
    let mut tick = tokio::time::interval(PERIODIC_RELOAD);
    tick.tick().await;
    loop {
        tokio::select! {
            msg = listener.try_recv() => match msg {
                Ok(Some(n)) => {
                    let Some(c) = caches.upgrade() else { return true };
                    c.apply(n.channel(), n.payload()).await;
                }
                // The connection dropped: reconnect, then reload everything.
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                    return false;
                }
            },
            _ = tick.tick() => {
                if !reload_all(caches).await {
                    return true;
                }
            }
        }
    }
}

/// Reload every cache; `false` once the caches are gone.
async fn reload_all<C: Caches>(caches: &Weak<C>) -> bool {
    let Some(c) = caches.upgrade() else { return false };
    c.reload_all().await;
    true
}
