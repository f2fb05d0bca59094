//! The schema as production grows it, read from the catalog of a migrated database: every foreign
//! key has an index to cascade through; and the clean-up (`platform::maintenance`), which deletes
//! in bounded batches, one instance at a time, and says what it left.

use std::time::Duration;

use tessera::platform::audit::AuditSink;
use tessera::platform::maintenance::{self, Retention};

use crate::common::TestDb;

/// Foreign keys of the migrated schema with no valid, non-partial index whose leading columns are
/// exactly the key's columns: a delete of a referenced row scans the whole referencing table.
const UNINDEXED_FOREIGN_KEYS: &str = r#"
SELECT c.conrelid::regclass::text || ' (' ||
       (SELECT string_agg(a.attname, ', ' ORDER BY k.ord)
          FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) ||
       ') -> ' || c.confrelid::regclass::text
  FROM pg_constraint c
 WHERE c.contype = 'f'
   AND NOT EXISTS (
       SELECT 1 FROM pg_index i
        WHERE i.indrelid = c.conrelid AND i.indisvalid AND i.indpred IS NULL
          AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
          AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey)
 ORDER BY 1"#;

#[tokio::test]
async fn every_foreign_key_has_an_index_to_cascade_through() {
    let db = TestDb::new().await;
    let keys: Vec<String> = sqlx::query_scalar(UNINDEXED_FOREIGN_KEYS).fetch_all(&db.pool).await.unwrap();
    assert!(keys.is_empty(), "foreign keys without an index (add one in a migration): {keys:?}");

    // The check itself finds a foreign key without one.
    sqlx::query("CREATE TABLE probe (grant_id uuid REFERENCES grants (id) ON DELETE CASCADE)")
        .execute(&db.pool)
        .await
        .unwrap();
    let keys: Vec<String> = sqlx::query_scalar(UNINDEXED_FOREIGN_KEYS).fetch_all(&db.pool).await.unwrap();
    assert_eq!(keys, ["probe (grant_id) -> grants"]);
    sqlx::query("CREATE INDEX ON probe (grant_id)").execute(&db.pool).await.unwrap();
    let keys: Vec<String> = sqlx::query_scalar(UNINDEXED_FOREIGN_KEYS).fetch_all(&db.pool).await.unwrap();
    assert!(keys.is_empty());
}

const KEEP: Retention = Retention {
    unauthorized_clients: Duration::from_secs(86400),
    idle_clients: Duration::from_secs(90 * 86400),
    audit: Duration::from_secs(90 * 86400),
};

/// A database with `spent` grants three days old with only expired codes, `live` with a refresh
/// token still valid, and a user, client and resource for them.
async fn grants(spent: i64, live: i64) -> std::sync::Arc<TestDb> {
    let db = TestDb::new().await;
    let setup = [
        "INSERT INTO users (id, username, password_hash) VALUES ('00000000-0000-0000-0000-000000000001', 'alice', 'x')",
        "INSERT INTO resources (id, uri, name, scopes, default_scopes, token_ttl_seconds)
         VALUES ('00000000-0000-0000-0000-000000000002', 'https://mcp.example.com/mcp', 'Example', '{}', '{}', 600)",
        "INSERT INTO clients (client_id, client_name, redirect_uris, grant_types, token_endpoint_auth_method, origin)
         VALUES ('app', 'App', '{http://127.0.0.1/cb}', '{authorization_code,refresh_token}', 'none', 'admin')",
    ];
    for sql in setup {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let grants = "INSERT INTO grants (id, client_id, user_id, resource_id, scopes, created_at)
         SELECT gen_random_uuid(), 'app', '00000000-0000-0000-0000-000000000001',
                '00000000-0000-0000-0000-000000000002', '{}', now() - interval '3 days'
           FROM generate_series(1, $1)";
    sqlx::query(grants).bind(spent + live).execute(&db.pool).await.unwrap();
    let codes = "INSERT INTO authorization_codes (code_hash, grant_id, client_id, redirect_uri, redirect_uri_sent,
                                                  code_challenge, created_at, expires_at, used_at)
         SELECT sha256(id::text::bytea), id, client_id, 'http://127.0.0.1/cb', true, 'x',
                created_at, created_at + interval '1 minute', created_at
           FROM grants";
    sqlx::query(codes).execute(&db.pool).await.unwrap();
    let tokens = "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, expires_at, absolute_expires_at)
         SELECT sha256(('r' || id::text)::bytea), id, client_id, now() + interval '1 day', now() + interval '30 days'
           FROM grants ORDER BY id LIMIT $1";
    sqlx::query(tokens).bind(live).execute(&db.pool).await.unwrap();
    db
}

async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn the_clean_up_deletes_spent_grants_in_batches_and_keeps_live_ones() {
    let spent = maintenance::BATCH * 2 + 17;
    let db = grants(spent, 25).await;
    let audit = AuditSink::log_only();
    let report = maintenance::prune_database(&db.pool, &audit, KEEP, maintenance::BUDGET)
        .await
        .unwrap()
        .expect("no other instance holds the lock");
    assert!(report.left.is_empty(), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let deleted = |what: &str| report.deleted.iter().find(|(w, _)| *w == what).map(|(_, n)| *n);
    assert_eq!(deleted("codes"), Some(u64::try_from(spent + 25).unwrap()));
    assert_eq!(deleted("spent grants"), Some(u64::try_from(spent).unwrap()));
    assert_eq!(count(&db, "grants").await, 25, "the grants with a live refresh token stay");
    assert_eq!(count(&db, "refresh_tokens").await, 25);
    assert_eq!(count(&db, "authorization_codes").await, 0);
}

#[tokio::test]
async fn one_instance_cleans_up_at_a_time_and_a_cut_run_says_what_is_left() {
    let db = grants(10, 0).await;
    let audit = AuditSink::log_only();
    // Another instance holds the lock: this one skips its turn.
    let mut other = db.pool.acquire().await.unwrap().detach();
    assert!(tessera::store::maintenance::try_lock(&mut other).await.unwrap());
    let skipped = maintenance::prune_database(&db.pool, &audit, KEEP, maintenance::BUDGET).await.unwrap();
    assert!(skipped.is_none(), "{skipped:?}");
    assert_eq!(count(&db, "grants").await, 10);
    // Its connection gone, the lock is free again.
    sqlx::Connection::close(other).await.unwrap();

    // A run with no time left deletes nothing and names every step it did not finish.
    let cut = maintenance::prune_database(&db.pool, &audit, KEEP, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(cut.total(), 0);
    assert_eq!(cut.left.len(), cut.deleted.len(), "{cut:?}");
    assert!(cut.left.iter().any(|l| l.starts_with("spent grants: the walk looked at 0 grants")), "{cut:?}");
    assert_eq!(count(&db, "grants").await, 10);

    let done = maintenance::prune_database(&db.pool, &audit, KEEP, maintenance::BUDGET).await.unwrap().unwrap();
    assert!(done.left.is_empty(), "{done:?}");
    assert_eq!(count(&db, "grants").await, 0);
}
