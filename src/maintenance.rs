//! Periodic pruning of what has expired: sessions, pending authorization requests, codes,
//! refresh tokens, spent grants, and self-registered clients never used or long unused. Every instance runs it; the deletes are idempotent.

use std::sync::Weak;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::audit::{Event, Outcome};
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
    app.registration_limiter.prune();
    app.limits.prune();
    app.revocation.prune();
    app.verified.prune();
    app.cimd.prune();
    let settings = &app.settings;
    match store::clients::delete_stale(
        &app.pool,
        settings.registration_unauthorized_ttl.as_secs_f64(),
        settings.registration_idle_ttl.as_secs_f64(),
    )
    .await
    {
        Ok(deleted) => {
            for (client_id, reason) in deleted {
                app.audit
                    .record(Event::new("client.cleaned_up", Outcome::Success).client(client_id).detail(reason))
                    .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "client cleanup failed"),
    }
    let results = [
        ("sessions", app.sessions.prune().await),
        ("authorization requests", store::authz_requests::prune(&app.pool).await),
        ("codes, refresh tokens and grants", store::grants::prune(&app.pool, GRANT_RETENTION_SECONDS).await),
        ("revoked access tokens", store::revocation::prune(&app.pool).await),
        ("login failures", store::login_throttle::prune(&app.pool).await),
        (
            "audit records past retention",
            store::audit::prune(&app.pool, app.settings.audit_retention.as_secs_f64()).await,
        ),
    ];
    for (what, result) in results {
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, what, "pruned expired rows"),
            Err(e) => tracing::warn!(error = %e, what, "pruning failed"),
        }
    }
}
