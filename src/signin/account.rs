//! A person's own account, as `/account` shows it: the applications they connected (their
//! grants, one entry per application and resource), where they are signed in (their browser
//! sessions), and their password. Every change is audited with the person as the subject.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::signin::authentication::{self, SessionUser, SignIn};
use crate::signin::password::{self, PasswordError};
use crate::store::login_throttle::Limits;
use crate::store::{grants, sessions, users};
use crate::tokens::revocation::Revocation;

/// An application the person approved, for one resource: all its standing grants together.
#[derive(Clone, Debug)]
pub struct ConnectedApp {
    pub client_id: String,
    pub client_name: String,
    /// Registered itself (dynamic registration or a metadata document): Tessera has not
    /// checked who made it.
    pub unverified: bool,
    /// The host of its client ID metadata document, when it is identified by one.
    pub metadata_document_host: Option<String>,
    pub resource_id: Uuid,
    pub resource_name: String,
    pub resource_uri: String,
    /// Every scope its grants hold, sorted.
    pub scopes: Vec<String>,
    pub first_approved: DateTime<Utc>,
    /// The last approval or refresh.
    pub last_used: DateTime<Utc>,
}

/// The person's connected applications, in the order they were first approved.
pub async fn connected_apps(pool: &PgPool, user_id: Uuid) -> Result<Vec<ConnectedApp>, sqlx::Error> {
    let mut apps: BTreeMap<(String, Uuid), ConnectedApp> = BTreeMap::new();
    for g in grants::user_grants(pool, user_id).await? {
        let used = g.last_refreshed_at.map_or(g.created_at, |r| r.max(g.created_at));
        let app = apps.entry((g.client_id.clone(), g.resource_id)).or_insert_with(|| ConnectedApp {
            metadata_document_host: (g.client_origin == "cimd")
                .then(|| url::Url::parse(&g.client_id).ok()?.host_str().map(str::to_owned))
                .flatten(),
            unverified: g.client_origin != "admin",
            client_id: g.client_id,
            client_name: g.client_name,
            resource_id: g.resource_id,
            resource_name: g.resource_name,
            resource_uri: g.resource_uri,
            scopes: Vec::new(),
            first_approved: g.created_at,
            last_used: used,
        });
        app.scopes.extend(g.scopes);
        app.first_approved = app.first_approved.min(g.created_at);
        app.last_used = app.last_used.max(used);
    }
    let mut apps: Vec<ConnectedApp> = apps.into_values().collect();
    for app in &mut apps {
        app.scopes.sort();
        app.scopes.dedup();
    }
    apps.sort_by_key(|a| a.first_approved);
    Ok(apps)
}

/// Disconnect an application from a resource: its approval is forgotten (the next authorization
/// asks again) and its grants revoked, so its refresh tokens stop at once and its access tokens
/// turn inactive at introspection and at the gateway. How many grants were revoked.
pub async fn disconnect(
    pool: &PgPool,
    revocation: &Revocation,
    audit: &AuditSink,
    meta: &RequestMeta,
    user_id: Uuid,
    client_id: &str,
    resource_id: Uuid,
) -> Result<usize, sqlx::Error> {
    let revoked = grants::disconnect(pool, user_id, client_id, resource_id).await?;
    for grant in &revoked {
        revocation.grant_revoked(&grant.to_string());
    }
    let event = Event::new("account.app_disconnected", Outcome::Success)
        .during(meta)
        .subject(user_id.to_string())
        .client(client_id)
        .detail(format!("resource {resource_id}, {} grants revoked", revoked.len()));
    audit.record(event).await;
    Ok(revoked.len())
}

/// A place the person is signed in.
#[derive(Clone, Debug)]
pub struct DeviceSession {
    /// The session's OpenID `sid`: names it on the page, never the cookie.
    pub sid: String,
    pub signed_in_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// The browser looking at the page.
    pub current: bool,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct StoredUser {
    #[serde(default)]
    sid: String,
    auth_time: i64,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
}

/// The person's sessions, the current one first.
pub async fn sessions(pool: &PgPool, current: &SessionUser) -> Result<Vec<DeviceSession>, sqlx::Error> {
    let mut list: Vec<DeviceSession> = sessions::user_sessions(pool, current.id)
        .await?
        .into_iter()
        .filter_map(|row| {
            let user: StoredUser = serde_json::from_value(row.user).ok()?;
            Some(DeviceSession {
                current: !user.sid.is_empty() && user.sid == current.sid,
                signed_in_at: DateTime::from_timestamp(user.auth_time, 0).unwrap_or_default(),
                sid: user.sid,
                address: user.address,
                user_agent: user.user_agent,
                expires_at: row.expires_at,
            })
        })
        .collect();
    list.sort_by_key(|s| !s.current);
    Ok(list)
}

/// End one of the person's sessions (another browser signs out at its next request).
pub async fn end_session(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    user_id: Uuid,
    sid: &str,
) -> Result<bool, sqlx::Error> {
    let ended = !sid.is_empty() && sessions::delete_user_session(pool, user_id, sid).await?;
    if ended {
        let event = Event::new("account.session_ended", Outcome::Success).during(meta).subject(user_id.to_string());
        audit.record(event.detail(format!("session {sid}"))).await;
    }
    Ok(ended)
}

/// End every session of the person but the current one. How many ended.
pub async fn end_other_sessions(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    current: &SessionUser,
) -> Result<u64, sqlx::Error> {
    let ended = sessions::delete_other_user_sessions(pool, current.id, &current.sid).await?;
    let event = Event::new("account.sessions_ended", Outcome::Success).during(meta).subject(current.id.to_string());
    audit.record(event.detail(format!("{ended} other sessions"))).await;
    Ok(ended)
}

/// How a password change ended.
#[derive(Debug)]
pub enum PasswordChange {
    /// Changed: every session ended (the caller signs the current browser in again) and, when
    /// asked, every grant revoked.
    Changed {
        sessions: u64,
        grants: u64,
    },
    /// The current password was wrong (counted like a failed sign-in).
    WrongPassword,
    Throttled {
        retry_after_secs: i64,
    },
    /// The new password breaks the policy, or the two entries differ.
    Rejected(PasswordError),
    Mismatch,
    /// The account has no password: it signs in through an identity provider.
    NoPassword,
}

/// What the person typed to change their password.
pub struct NewPassword<'a> {
    pub current: &'a str,
    pub new: &'a str,
    pub confirm: &'a str,
    /// Also revoke every grant (every connected application must be approved again).
    pub disconnect_apps: bool,
}

/// Change the person's password after checking the current one (throttled like a sign-in).
pub async fn change_password(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    limits: Limits,
    user: &users::User,
    form: &NewPassword<'_>,
) -> Result<PasswordChange, sqlx::Error> {
    if user.password_hash.is_none() {
        return Ok(PasswordChange::NoPassword);
    }
    if form.new != form.confirm {
        return Ok(PasswordChange::Mismatch);
    }
    if let Err(e) = password::check_policy(form.new) {
        return Ok(PasswordChange::Rejected(e));
    }
    match authentication::reauthenticate(pool, audit, meta, limits, &user.username, form.current).await? {
        SignIn::Success { .. } => {}
        SignIn::Refused => return Ok(PasswordChange::WrongPassword),
        SignIn::Throttled { retry_after_secs } => return Ok(PasswordChange::Throttled { retry_after_secs }),
    }
    let new = form.new.to_owned();
    let hashed = match tokio::task::spawn_blocking(move || password::hash_blocking(&new)).await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return Ok(PasswordChange::Rejected(e)),
        Err(e) => return Err(sqlx::Error::Protocol(format!("password hashing failed: {e}"))),
    };
    let keep_grants = !form.disconnect_apps;
    let Some((id, evicted)) = users::set_password(pool, &user.username, &hashed, keep_grants).await? else {
        return Err(sqlx::Error::RowNotFound);
    };
    let grants = if keep_grants { "grants kept".to_owned() } else { format!("{} grants revoked", evicted.grants) };
    let event = Event::new("account.password_changed", Outcome::Success).during(meta).subject(id.to_string());
    audit.record(event.detail(format!("{} sessions ended, {grants}", evicted.sessions))).await;
    Ok(PasswordChange::Changed { sessions: evicted.sessions, grants: evicted.grants })
}
