//! Periodic pruning of what has expired in the database: sessions, pending authorization
//! requests, codes, refresh tokens, spent grants, login throttling, old audit records, and
//! self-registered clients never used or long unused. Every instance runs it (`state` schedules
//! it); the deletes are idempotent.

use std::time::Duration;

use sqlx::PgPool;

use crate::platform::audit::{AuditSink, Event, Outcome};
use crate::store;

/// Spent grants are kept this long, well past the longest access-token lifetime, so
/// introspection can still say a token's grant was revoked.
const GRANT_RETENTION_SECONDS: f64 = 2.0 * 86400.0;

/// How long things are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Self-registered clients that never completed an authorization.
    pub unauthorized_clients: Duration,
    /// Self-registered and metadata-document clients unused this long.
    pub idle_clients: Duration,
    pub audit: Duration,
}

pub async fn prune_database(pool: &PgPool, audit: &AuditSink, keep: Retention) {
    match store::clients::delete_stale(pool, keep.unauthorized_clients.as_secs_f64(), keep.idle_clients.as_secs_f64())
        .await
    {
        Ok(deleted) => {
            for (client_id, reason) in deleted {
                audit.record(Event::new("client.cleaned_up", Outcome::Success).client(client_id).detail(reason)).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "client cleanup failed"),
    }
    let results = [
        ("sessions", store::sessions::prune(pool).await),
        ("authorization requests", store::authz_requests::prune(pool).await),
        ("codes, refresh tokens and grants", store::grants::prune(pool, GRANT_RETENTION_SECONDS).await),
        ("revoked access tokens", store::revocation::prune(pool).await),
        ("login failures", store::login_throttle::prune(pool).await),
        ("audit records past retention", store::audit::prune(pool, keep.audit.as_secs_f64()).await),
    ];
    for (what, result) in results {
        match result {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, what, "pruned expired rows"),
            Err(e) => tracing::warn!(error = %e, what, "pruning failed"),
        }
    }
}
