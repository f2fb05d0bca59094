//! Periodic pruning of what has expired in the database: self-registered clients never used or
//! long unused, sessions, pending authorization requests, codes, refresh tokens, spent grants,
//! revoked access tokens, login throttling, old audit records.
//!
//! Bounded, so it finishes at any size: one instance at a time (an advisory lock; the others skip
//! their turn), statements of at most [`BATCH`] rows (short locks, WAL in small pieces), and a run
//! of at most its time budget: what is left when the budget runs out waits for the next run, and
//! the run's [`Report`] says what that is. Spent grants are found by walking the grants in id
//! order, so every grant is looked at once per run whatever the backlog.

use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, PgPool};
use uuid::Uuid;

use crate::platform::audit::{AuditSink, Event, Outcome};
use crate::store;

/// Spent grants are kept this long, well past the longest access-token lifetime, so
/// introspection can still say a token's grant was revoked.
const GRANT_RETENTION_SECONDS: f64 = 2.0 * 86400.0;
/// Rows one statement deletes at most.
pub const BATCH: i64 = 5_000;
/// How long one run may take, unless the caller says otherwise.
pub const BUDGET: Duration = Duration::from_secs(50);

/// How long things are kept.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Self-registered clients that never completed an authorization.
    pub unauthorized_clients: Duration,
    /// Self-registered and metadata-document clients unused this long.
    pub idle_clients: Duration,
    pub audit: Duration,
}

/// What one run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Rows deleted, by what they were.
    pub deleted: Vec<(&'static str, u64)>,
    /// What the budget cut short (left for the next run), and how far the grants walk got.
    pub left: Vec<String>,
    /// Steps that failed (logged); the others ran.
    pub failed: Vec<&'static str>,
    pub elapsed: Duration,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.deleted.iter().map(|(_, n)| n).sum()
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    Clients,
    Sessions,
    Requests,
    Codes,
    RefreshTokens,
    Grants,
    RevokedTokens,
    LoginFailures,
    Audit,
}

impl Step {
    /// In this order: clients first (their grants, codes and tokens go with them), grants after
    /// their codes and refresh tokens.
    const ALL: [Step; 9] = [
        Step::Clients,
        Step::Sessions,
        Step::Requests,
        Step::Codes,
        Step::RefreshTokens,
        Step::Grants,
        Step::RevokedTokens,
        Step::LoginFailures,
        Step::Audit,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Clients => "stale clients",
            Step::Sessions => "sessions",
            Step::Requests => "authorization requests",
            Step::Codes => "codes",
            Step::RefreshTokens => "refresh tokens",
            Step::Grants => "spent grants",
            Step::RevokedTokens => "revoked access tokens",
            Step::LoginFailures => "login failures",
            Step::Audit => "audit records past retention",
        }
    }
}

/// One run, if no other instance is running one (`None` then). The lock is held by a connection
/// of the run's own, closed at the end, so a run that dies takes its lock with it.
pub async fn prune_database(
    pool: &PgPool,
    audit: &AuditSink,
    keep: Retention,
    budget: Duration,
) -> Result<Option<Report>, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    if !store::maintenance::try_lock(&mut conn).await? {
        return Ok(None);
    }
    let report = run(&mut conn, audit, keep, budget).await;
    if let Err(e) = store::maintenance::unlock(&mut conn).await {
        tracing::warn!(error = %e, "could not release the clean-up lock; closing its connection does");
    }
    let _ = conn.close().await;
    Ok(Some(report))
}

async fn run(conn: &mut PgConnection, audit: &AuditSink, keep: Retention, budget: Duration) -> Report {
    let started = Instant::now();
    let deadline = started + budget;
    let mut report = Report::default();
    for step in Step::ALL {
        let mut walk = Walk { cursor: Uuid::nil(), deleted: 0, batches: 0 };
        let finished = loop {
            if Instant::now() >= deadline {
                break false;
            }
            match batch(conn, audit, keep, step, &mut walk.cursor).await {
                Ok((n, more)) => {
                    walk.deleted += n;
                    walk.batches += 1;
                    if !more {
                        break true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, what = step.name(), "pruning failed");
                    report.failed.push(step.name());
                    break true;
                }
            }
        };
        report.deleted.push((step.name(), walk.deleted));
        if !finished {
            report.left.push(match step {
                Step::Grants => {
                    format!("spent grants: the walk looked at {} grants of the table, in id order", walk.looked_at())
                }
                _ => format!("{}: more than the {} deleted", step.name(), walk.deleted),
            });
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// A step's progress within a run.
struct Walk {
    /// The grants walk's last id.
    cursor: Uuid,
    deleted: u64,
    batches: u64,
}

impl Walk {
    /// How many grants the walk looked at (whole batches; the last may have been short).
    fn looked_at(&self) -> u64 {
        self.batches * BATCH.unsigned_abs()
    }
}

/// One statement of `step`: how many rows went, and whether there may be more.
async fn batch(
    conn: &mut PgConnection,
    audit: &AuditSink,
    keep: Retention,
    step: Step,
    cursor: &mut Uuid,
) -> Result<(u64, bool), sqlx::Error> {
    let full = |n: u64| (n, n >= BATCH.unsigned_abs());
    Ok(match step {
        Step::Clients => {
            let (never, idle) = (keep.unauthorized_clients.as_secs_f64(), keep.idle_clients.as_secs_f64());
            let deleted = store::clients::delete_stale(conn, never, idle, BATCH).await?;
            let n = deleted.len() as u64;
            for (client_id, reason) in deleted {
                audit.record(Event::new("client.cleaned_up", Outcome::Success).client(client_id).detail(reason)).await;
            }
            full(n)
        }
        Step::Sessions => full(store::sessions::prune(conn, BATCH).await?),
        Step::Requests => full(store::authz_requests::prune(conn, BATCH).await?),
        Step::Codes => full(store::grants::prune_codes(conn, BATCH).await?),
        Step::RefreshTokens => full(store::grants::prune_refresh_tokens(conn, BATCH).await?),
        Step::Grants => {
            let (n, last) = store::grants::prune_grants(conn, *cursor, BATCH, GRANT_RETENTION_SECONDS).await?;
            match last {
                Some(last) => {
                    *cursor = last;
                    (n, true)
                }
                None => (n, false),
            }
        }
        Step::RevokedTokens => full(store::revocation::prune(conn, BATCH).await?),
        Step::LoginFailures => full(store::login_throttle::prune(conn, BATCH).await?),
        Step::Audit => full(store::audit::prune(conn, keep.audit.as_secs_f64(), BATCH).await?),
    })
}
