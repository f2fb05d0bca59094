//! Failed logins per (account, source), in PostgreSQL so throttling holds across instances and
//! restarts. `account` is the lower-cased username as typed, whether or not it exists.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The window in which failures from one source add up.
const SOURCE_WINDOW_SECS: f64 = 900.0;
/// The longest an account+source pair is refused after its failures.
const MAX_BLOCK_SECS: f64 = 900.0;

/// Until when attempts for `account` from `source` are refused: by that pair's own failures,
/// or because the source as a whole failed too often recently.
pub async fn blocked_until(
    pool: &PgPool,
    account: &str,
    source: &str,
    source_max_failures: i64,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT
             (SELECT blocked_until FROM login_failures
               WHERE account = $1 AND source = $2::text::inet AND blocked_until > now()) AS "pair",
             (SELECT max(last_failure_at) + make_interval(secs => $4) FROM login_failures
               WHERE source = $2::text::inet AND last_failure_at > now() - make_interval(secs => $4)
               HAVING sum(failures) FILTER (WHERE last_failure_at > now() - make_interval(secs => $4)) >= $3) AS "source""#,
        account,
        source,
        source_max_failures,
        SOURCE_WINDOW_SECS
    )
    .fetch_one(pool)
    .await?;
    Ok(match (row.pair, row.source) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    })
}

/// Count a failure. From the `max_failures`-th on, the pair is refused for a growing interval:
/// 1, 2, 4, ... seconds, at most 15 minutes. A day without failures starts the count afresh.
pub async fn record_failure(pool: &PgPool, account: &str, source: &str, max_failures: i32) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO login_failures AS f (account, source, failures, last_failure_at, blocked_until)
         VALUES ($1, $2::text::inet, 1, now(), CASE WHEN $3 <= 1 THEN now() + interval '1 second' END)
         ON CONFLICT (account, source) DO UPDATE SET
             failures = CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 1 ELSE f.failures + 1 END,
             last_failure_at = now(),
             blocked_until = CASE
                 WHEN (CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 1 ELSE f.failures + 1 END) >= $3
                 THEN now() + make_interval(secs => least($4,
                        power(2, (CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 1 ELSE f.failures + 1 END) - $3)))
                 ELSE NULL END",
        account,
        source,
        max_failures,
        MAX_BLOCK_SECS
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A successful login forgets that pair's failures.
pub async fn clear(pool: &PgPool, account: &str, source: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM login_failures WHERE account = $1 AND source = $2::text::inet", account, source)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM login_failures WHERE last_failure_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected())
}
