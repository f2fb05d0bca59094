//! The `audit_events` table.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One record to store (the audit module builds them; this module only writes them).
#[derive(Clone, Debug)]
pub struct NewRow<'a> {
    pub at: DateTime<Utc>,
    pub request_id: Option<&'a str>,
    pub event: &'a str,
    pub outcome: &'a str,
    pub client_id: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub scopes: Option<&'a str>,
    pub source: Option<IpAddr>,
    pub digest: Option<&'a str>,
    pub detail: Option<&'a str>,
}

/// Insert a batch in one statement.
pub async fn insert(pool: &PgPool, events: &[NewRow<'_>]) -> Result<(), sqlx::Error> {
    let mut at = Vec::with_capacity(events.len());
    let mut request_id = Vec::with_capacity(events.len());
    let mut event = Vec::with_capacity(events.len());
    let mut outcome = Vec::with_capacity(events.len());
    let mut client_id = Vec::with_capacity(events.len());
    let mut subject = Vec::with_capacity(events.len());
    let mut resource = Vec::with_capacity(events.len());
    let mut scopes = Vec::with_capacity(events.len());
    let mut source = Vec::with_capacity(events.len());
    let mut digest = Vec::with_capacity(events.len());
    let mut detail = Vec::with_capacity(events.len());
    let owned = |v: Option<&str>| v.map(str::to_owned);
    for e in events {
        at.push(e.at);
        request_id.push(owned(e.request_id));
        event.push(e.event.to_owned());
        outcome.push(e.outcome.to_owned());
        client_id.push(owned(e.client_id));
        subject.push(owned(e.subject));
        resource.push(owned(e.resource));
        scopes.push(owned(e.scopes));
        source.push(e.source.map(|s| s.to_string()));
        digest.push(owned(e.digest));
        detail.push(owned(e.detail));
    }
    sqlx::query!(
        "INSERT INTO audit_events (at, request_id, event, outcome, client_id, subject, resource, scopes, source, digest, detail)
         SELECT at, request_id, event, outcome, client_id, subject, resource, scopes, source::inet, digest, detail
         FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                     $9::text[], $10::text[], $11::text[])
              AS t(at, request_id, event, outcome, client_id, subject, resource, scopes, source, digest, detail)",
        &at,
        &request_id as &[Option<String>],
        &event,
        &outcome,
        &client_id as &[Option<String>],
        &subject as &[Option<String>],
        &resource as &[Option<String>],
        &scopes as &[Option<String>],
        &source as &[Option<String>],
        &digest as &[Option<String>],
        &detail as &[Option<String>]
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A stored record, as `audit tail` shows it.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub event: String,
    pub outcome: String,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub resource: Option<String>,
    pub scopes: Option<String>,
    pub source: Option<String>,
    pub digest: Option<String>,
    pub detail: Option<String>,
}

/// Filters for `audit tail`.
#[derive(Default)]
pub struct Filter {
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub event: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Only rows after this id (for --follow).
    pub after_id: Option<i64>,
}

/// Matching rows, oldest first: the last `limit` of them (or all after `after_id`).
pub async fn list(pool: &PgPool, f: &Filter, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let mut rows = sqlx::query_as!(
        Row,
        r#"SELECT id, at, request_id, event, outcome, client_id, subject, resource, scopes, host(source) AS source,
                  digest, detail
           FROM audit_events
           WHERE ($1::text IS NULL OR client_id = $1)
             AND ($2::text IS NULL OR subject = $2)
             AND ($3::text IS NULL OR event = $3 OR event LIKE $3 || '.%')
             AND ($4::timestamptz IS NULL OR at >= $4)
             AND ($5::bigint IS NULL OR id > $5)
           ORDER BY id DESC
           LIMIT $6"#,
        f.client_id,
        f.subject,
        f.event,
        f.since,
        f.after_id,
        limit
    )
    .fetch_all(pool)
    .await?;
    rows.reverse();
    Ok(rows)
}

/// Delete at most `limit` records older than the retention period; how many went.
pub async fn prune(conn: &mut sqlx::PgConnection, retention_secs: f64, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM audit_events WHERE ctid = ANY(ARRAY(
           SELECT ctid FROM audit_events WHERE at < now() - make_interval(secs => $1) LIMIT $2))",
        retention_secs,
        limit
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
