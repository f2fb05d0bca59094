//! The clean-up's advisory lock: one instance prunes at a time, the others skip their turn. A
//! session-level lock, so it is held by the connection that took it and goes with it: the caller
//! takes it on a connection of its own (not one that returns to a pool).

use sqlx::PgConnection;

/// `pg_advisory_lock` key of the clean-up ("tessera" and 1).
const LOCK: i64 = 0x7465_7373_6572_6101;

/// Take the lock if no other session holds it.
pub async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "taken!""#, LOCK).fetch_one(conn).await?;
    Ok(taken)
}

pub async fn unlock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", LOCK).fetch_one(conn).await?;
    Ok(())
}
