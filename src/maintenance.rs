//! Periodic pruning of what has expired: sessions, pending authorization requests, codes,
//! refresh tokens and spent grants. Every instance runs it; the deletes are idempotent.

use std::sync::Weak;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::{AppState, Inner};
use crate::store;

const PERIOD: Duration = Duration::from_secs(600);
/// Spent grants are kept this long, well past the longest access-token lifetime, so
/// introspection can still say a token's grant was revoked.
const GRANT_RETENTION_SECONDS: f64 = 2.0 * 86400.0;

pub fn spawn(state: Weak<Inner>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(app) = AppState::upgrade(&state) else { return };
            run_once(&app).await;
        }
    })
}

pub async fn run_once(app: &AppState) {
    let results = [
        ("sessions", app.sessions.prune().await),
        ("authorization requests", store::authz_requests::prune(&app.pool).await),
        ("codes, refresh tokens and grants", store::grants::prune(&app.pool, GRANT_RETENTION_SECONDS).await),
    ];
    for (what, result) in results {
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, what, "pruned expired rows"),
            Err(e) => tracing::warn!(error = %e, what, "pruning failed"),
        }
    }
}
