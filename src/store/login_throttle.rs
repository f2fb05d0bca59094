//! Login attempts per (account, source) and per source, in PostgreSQL so throttling holds across
//! instances and restarts. `account` is the lower-cased username as typed, whether or not it
//! exists.
//!
//! An attempt is reserved before the password is checked (one statement that counts it and
//! answers whether it may proceed), and released when it succeeds: however many guesses arrive
//! at once, at most the configured number is ever evaluated.
//!
//! Migration 0007's plpgsql functions `tessera_login_reserve` and `tessera_login_release` did
//! the same in several statements each; migration 0016 drops them (see the README's upgrade
//! notes for builds that still call them).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The window in which attempts from one source add up.
const SOURCE_WINDOW_SECS: f64 = 900.0;
/// The longest an account+source pair is refused after its failures.
const MAX_BLOCK_SECS: f64 = 900.0;

/// The limits a reservation is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Attempts for one account from one source before that pair is refused for 1, 2, 4, ... s.
    pub per_account: u32,
    /// Attempts from one source (any accounts) within 15 minutes before the source is refused.
    pub per_source: u32,
}

/// Reserve one attempt: `None` when it may proceed (it counts as a failure until
/// [`release`]d), else until when the pair or the source is refused.
///
/// One statement counts the attempt for the source (unless its window is full) and then for the
/// pair (unless the pair is blocked), each row locked by its upsert, source first, as every
/// statement here locks them. The pair's block is set when the attempt that reaches the limit
/// is reserved, not when it fails: that keeps the attempts evaluated at the limit however many
/// arrive at once. A pair's count starts afresh after a day without attempts; the source's after
/// [`SOURCE_WINDOW_SECS`].
pub async fn reserve(
    pool: &PgPool,
    account: &str,
    source: &str,
    limits: Limits,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let per_account = i32::try_from(limits.per_account).unwrap_or(i32::MAX);
    let per_source = i32::try_from(limits.per_source).unwrap_or(i32::MAX);
    // The last SELECT reads the rows as they were before this statement: the refusal's time.
    let counted = sqlx::query!(
        r#"WITH src AS (
              INSERT INTO login_sources AS s (source, attempts, window_start) VALUES ($2::text::inet, 1, now())
              ON CONFLICT (source) DO UPDATE
                 SET attempts = CASE WHEN s.window_start <= now() - make_interval(secs => $5) THEN 1 ELSE s.attempts + 1 END,
                     window_start = CASE WHEN s.window_start <= now() - make_interval(secs => $5) THEN now() ELSE s.window_start END
               WHERE s.window_start <= now() - make_interval(secs => $5) OR s.attempts < $4
              RETURNING 1 AS one
           ), pair AS (
              INSERT INTO login_failures AS f (account, source, failures, last_failure_at, blocked_until)
              SELECT $1, $2::text::inet, 1, now(),
                     CASE WHEN 1 >= $3 THEN now() + least(make_interval(secs => $6), make_interval(secs => 1)) END
                FROM src
              ON CONFLICT (account, source) DO UPDATE
                 SET failures = EXCLUDED.failures + CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 0 ELSE f.failures END,
                     last_failure_at = now(),
                     -- 1, 2, 4, ... seconds from the limit-th attempt on, at most the longest block.
                     blocked_until = CASE
                         WHEN 1 + CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 0 ELSE f.failures END >= $3
                         THEN now() + least(make_interval(secs => $6), make_interval(secs => power(2, least(
                             1 + CASE WHEN f.last_failure_at < now() - interval '1 day' THEN 0 ELSE f.failures END - $3, 30))))
                     END
               WHERE f.blocked_until IS NULL OR f.blocked_until <= now()
              RETURNING 1 AS one
           )
           SELECT EXISTS (SELECT 1 FROM src) AS "source_counted!",
                  EXISTS (SELECT 1 FROM pair) AS "pair_counted!",
                  (SELECT window_start + make_interval(secs => $5) FROM login_sources WHERE source = $2::text::inet) AS source_until"#,
        account,
        source,
        per_account,
        per_source,
        SOURCE_WINDOW_SECS,
        MAX_BLOCK_SECS
    )
    .fetch_one(pool)
    .await?;
    match (counted.source_counted, counted.pair_counted) {
        (true, true) => Ok(None),
        (false, _) => Ok(Some(counted.source_until.unwrap_or_else(Utc::now))),
        // The pair is blocked: its refusal does not count against the source.
        (true, false) => {
            let until = sqlx::query_scalar!(
                "WITH s AS (UPDATE login_sources SET attempts = greatest(attempts - 1, 0) WHERE source = $2::text::inet)
                 SELECT blocked_until FROM login_failures WHERE account = $1 AND source = $2::text::inet",
                account,
                source
            )
            .fetch_optional(pool)
            .await?
            .flatten();
            Ok(Some(until.unwrap_or_else(Utc::now)))
        }
    }
}

/// A reserved attempt failed: the pair's block (set provisionally when the attempt that reached
/// the limit was reserved) now runs from this failure, as long as the reservation's.
pub async fn failed(pool: &PgPool, account: &str, source: &str, limits: Limits) -> Result<(), sqlx::Error> {
    let per_account = i32::try_from(limits.per_account).unwrap_or(i32::MAX);
    sqlx::query!(
        "UPDATE login_failures
            SET blocked_until = greatest(blocked_until,
                    now() + least(make_interval(secs => $4), make_interval(secs => power(2, least(failures - $3, 30)))))
          WHERE account = $1 AND source = $2::text::inet AND failures >= $3",
        account,
        source,
        per_account,
        MAX_BLOCK_SECS
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A successful login: forget that pair's failures and return the source's reservation, in one
/// statement that locks the source first (the count below makes the pair's delete wait for it),
/// as [`reserve`] does, so the two never deadlock.
pub async fn release(pool: &PgPool, account: &str, source: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "WITH s AS (UPDATE login_sources SET attempts = greatest(attempts - 1, 0) WHERE source = $2::text::inet RETURNING 1)
         DELETE FROM login_failures WHERE account = $1 AND source = $2::text::inet AND (SELECT count(*) FROM s) >= 0",
        account,
        source
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Delete at most `limit` failures older than a day and `limit` sources past their window; how
/// many went.
pub async fn prune(conn: &mut sqlx::PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let pairs = sqlx::query!(
        "DELETE FROM login_failures WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM login_failures WHERE last_failure_at < now() - interval '1 day' LIMIT $1))",
        limit
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let sources = sqlx::query!(
        "DELETE FROM login_sources WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM login_sources WHERE window_start < now() - make_interval(secs => $1) LIMIT $2))",
        SOURCE_WINDOW_SECS,
        limit
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(pairs + sources)
}
