//! Browser sessions for tower-sessions, stored in PostgreSQL under the SHA-256 of the session id,
//! so the database never holds a usable cookie value. Each row names its signed-in user, so a
//! credential change can end that user's sessions; and a save never re-creates a deleted row, so
//! a request in flight during the change cannot bring its session back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

#[derive(Clone, Debug)]
pub struct PgSessionStore {
    pool: PgPool,
}

impl PgSessionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Delete at most `limit` expired sessions; how many went.
pub async fn prune(conn: &mut PgConnection, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM sessions WHERE ctid = ANY(ARRAY(SELECT ctid FROM sessions WHERE expires_at < now() LIMIT $1))",
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

fn key(id: &Id) -> Vec<u8> {
    crate::oauth::secret::digest(&id.to_string()).to_vec()
}

/// The signed-in user's id, as `http::browser` keeps it under `user`.
fn user_id(record: &Record) -> Option<uuid::Uuid> {
    record.data.get("user")?.get("id")?.as_str()?.parse().ok()
}

/// End every session of a user (a password change, a disabled account).
pub async fn delete_user_sessions(conn: &mut PgConnection, user_id: uuid::Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user_id).execute(conn).await?.rows_affected())
}

/// A signed-in session of a user, as the account page lists it: the `user` entry of its data
/// (see `authentication::SessionUser`) and when it ends if left unused.
pub struct UserSession {
    pub user: serde_json::Value,
    pub expires_at: DateTime<Utc>,
}

/// The live sessions of a user, the most recent sign-in first (at most 100).
pub async fn user_sessions(pool: &PgPool, user_id: uuid::Uuid) -> Result<Vec<UserSession>, sqlx::Error> {
    sqlx::query_as!(
        UserSession,
        r#"SELECT data -> 'user' AS "user!", expires_at FROM sessions
           WHERE user_id = $1 AND expires_at > now() AND data ? 'user'
           ORDER BY (data -> 'user' ->> 'auth_time') DESC LIMIT 100"#,
        user_id
    )
    .fetch_all(pool)
    .await
}

/// End one session of a user, named by its `sid` (never the cookie). Whether there was one.
pub async fn delete_user_session(pool: &PgPool, user_id: uuid::Uuid, sid: &str) -> Result<bool, sqlx::Error> {
    let deleted =
        sqlx::query!("DELETE FROM sessions WHERE user_id = $1 AND data -> 'user' ->> 'sid' = $2", user_id, sid)
            .execute(pool)
            .await?;
    Ok(deleted.rows_affected() > 0)
}

/// End every session of a user but the one whose `sid` is `keep`. How many ended.
pub async fn delete_other_user_sessions(pool: &PgPool, user_id: uuid::Uuid, keep: &str) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM sessions WHERE user_id = $1 AND coalesce(data -> 'user' ->> 'sid', '') <> $2",
        user_id,
        keep
    )
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

fn expiry(record: &Record) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(record.expiry_date.unix_timestamp(), 0).unwrap_or_else(Utc::now)
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait::async_trait]
impl SessionStore for PgSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data = serde_json::to_value(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        // A 128-bit id collides essentially never; if it does, draw another.
        for _ in 0..4 {
            let inserted = sqlx::query!(
                "INSERT INTO sessions (id_hash, data, expires_at, user_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                key(&record.id),
                data,
                expiry(record),
                user_id(record)
            )
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(backend("could not allocate a session id"))
    }

    /// Update an existing session only: tower-sessions creates new ones through `create`, so a
    /// missing row here was deleted (signed out everywhere, password changed) and stays deleted.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_value(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        sqlx::query!(
            "UPDATE sessions SET data = $2, expires_at = $3, user_id = $4 WHERE id_hash = $1",
            key(&record.id),
            data,
            expiry(record),
            user_id(record)
        )
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row =
            sqlx::query!("SELECT data, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > now()", key(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some(row) = row else { return Ok(None) };
        let data: HashMap<String, serde_json::Value> =
            serde_json::from_value(row.data).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(row.expires_at.timestamp()).map_err(backend)?;
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query!("DELETE FROM sessions WHERE id_hash = $1", key(id)).execute(&self.pool).await.map_err(backend)?;
        Ok(())
    }
}
