//! Cross-instance cache invalidation: one `LISTEN` connection per instance. A notification on a
//! cache's channel makes this instance reload that cache. After a reconnect, or every minute,
//! every cache is reloaded, because notifications sent while disconnected are lost.

use std::sync::Weak;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;

use crate::state::{AppState, Inner};
use crate::store;

const PERIODIC_RELOAD: Duration = Duration::from_secs(60);

pub fn spawn(state: Weak<Inner>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let Some(app) = AppState::upgrade(&state) else {
                return;
            };
            let pool = app.pool.clone();
            drop(app);
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let channels = [
                store::keys::CHANNEL,
                store::resources::CHANNEL,
                store::clients::CHANNEL,
                store::grants::CHANNEL,
                store::revocation::CHANNEL,
            ];
            if let Err(e) = listener.listen_all(channels).await {
                tracing::warn!(error = %e, "cache invalidation listener cannot LISTEN; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(200);
            if !reload_all(&state).await {
                return;
            }
            if let Some(app) = AppState::upgrade(&state) {
                app.listening.send_replace(true);
            }
            let mut tick = tokio::time::interval(PERIODIC_RELOAD);
            tick.tick().await;
            loop {
                tokio::select! {
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) => {
                            let Some(app) = AppState::upgrade(&state) else { return };
                            match n.channel() {
                                store::keys::CHANNEL => app.reload_keys().await,
                                store::grants::CHANNEL => app.revocation.grant_revoked(n.payload()),
                                store::revocation::CHANNEL => app.revocation.token_revoked(n.payload()),
                                store::clients::CHANNEL => {
                                    app.clients.invalidate(n.payload());
                                    app.revocation.client_changed(n.payload());
                                }
                                store::resources::CHANNEL => {
                                    app.reload_resources().await;
                                    // The longest token lifetime may have changed, and with it how
                                    // long retired keys stay published.
                                    app.reload_keys().await;
                                }
                                _ => {}
                            }
                        }
                        // The connection dropped: reconnect, then reload everything.
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                            break;
                        }
                    },
                    _ = tick.tick() => {
                        if !reload_all(&state).await {
                            return;
                        }
                    }
                }
            }
            // Not listening until the reconnect: notifications sent meanwhile are lost.
            if let Some(app) = AppState::upgrade(&state) {
                app.listening.send_replace(false);
            }
        }
    })
}

/// Reload every cache; `false` once the state is gone.
async fn reload_all(state: &Weak<Inner>) -> bool {
    let Some(app) = AppState::upgrade(state) else {
        return false;
    };
    app.reload_resources().await;
    app.reload_keys().await;
    app.reload_revocation().await;
    true
}
