//! Login attempts per (account, source) and per source, in PostgreSQL so throttling holds across
//! instances and restarts. `account` is the lower-cased username as typed, whether or not it
//! exists.
//!
//! An attempt is reserved before the password is checked (one statement that counts it and
//! answers whether it may proceed), and released when it succeeds: however many guesses arrive
//! at once, at most the configured number is ever evaluated.

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
pub async fn reserve(
    pool: &PgPool,
    account: &str,
    source: &str,
    limits: Limits,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let per_account = i32::try_from(limits.per_account).unwrap_or(i32::MAX);
    let per_source = i32::try_from(limits.per_source).unwrap_or(i32::MAX);
    sqlx::query_scalar!(
        "SELECT tessera_login_reserve($1, $2::text::inet, $3, $4, make_interval(secs => $5), make_interval(secs => $6))",
        account,
        source,
        per_account,
        per_source,
        SOURCE_WINDOW_SECS,
        MAX_BLOCK_SECS
    )
    .fetch_one(pool)
    .await
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

/// A successful login: forget that pair's failures and return the source's reservation.
pub async fn release(pool: &PgPool, account: &str, source: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT tessera_login_release($1, $2::text::inet)", account, source).execute(pool).await?;
    Ok(())
}

pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let pairs = sqlx::query!("DELETE FROM login_failures WHERE last_failure_at < now() - interval '1 day'")
        .execute(pool)
        .await?
        .rows_affected();
    let sources = sqlx::query!(
        "DELETE FROM login_sources WHERE window_start < now() - make_interval(secs => $1)",
        SOURCE_WINDOW_SECS
    )
    .execute(pool)
    .await?
    .rows_affected();
    Ok(pairs + sources)
}
