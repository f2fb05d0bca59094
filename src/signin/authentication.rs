//! Signing a person in with a password: throttled (an attempt is reserved in the database before
//! the password is checked), audited, and the same for unknown and existing accounts (same
//! answer, same argon2 work). Also whether a signed-in browser session still counts.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::store::login_throttle::{self, Limits};
use crate::store::users::{self, User};

/// The signed-in user, as a browser session keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: Uuid,
    pub username: String,
    /// When the user last entered their password (Unix seconds).
    pub auth_time: i64,
    /// The account's session generation at sign-in: a password change or a disable bumps it,
    /// voiding this session even if it escaped deletion. (Absent in sessions older than the field.)
    #[serde(default)]
    pub generation: i32,
    /// The session's id for OpenID Connect (`sid`): random, fixed at sign-in, never the cookie.
    /// (Empty in sessions older than the field.)
    #[serde(default)]
    pub sid: String,
    /// Where the person signed in from, for their list of sessions (`/account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The browser's `User-Agent` at sign-in, cut to [`USER_AGENT_MAX`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Signed in only to set up a second factor (`TESSERA_MFA=required`): good for the account
    /// page, not for any application.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub setup_only: bool,
}

/// How much of a `User-Agent` a session keeps.
pub const USER_AGENT_MAX: usize = 200;

impl SessionUser {
    /// The session of `user`, signed in now.
    pub fn signed_in_now(user: &User) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            auth_time: chrono::Utc::now().timestamp(),
            generation: user.session_generation,
            sid: crate::oauth::secret::new_jti(),
            address: None,
            user_agent: None,
            setup_only: false,
        }
    }

    /// The same, remembering the device: the source address and the browser's `User-Agent`.
    pub fn from_device(mut self, meta: &RequestMeta, user_agent: Option<&str>) -> Self {
        self.address = Some(meta.source.to_string());
        self.user_agent = user_agent
            .map(|ua| ua.chars().filter(|c| !c.is_control()).take(USER_AGENT_MAX).collect::<String>())
            .filter(|ua| !ua.is_empty());
        self
    }

    /// When the user signed in.
    pub fn authenticated_at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.auth_time, 0).unwrap_or_default()
    }

    /// Whether the session still counts: the account exists, is enabled, and has not changed
    /// its password (or been disabled) since this session signed in.
    pub async fn still_valid(&self, pool: &PgPool) -> Result<bool, sqlx::Error> {
        let current = users::by_id(pool, self.id).await?;
        Ok(current.is_some_and(|u| !u.disabled && u.session_generation == self.generation))
    }
}

/// How a sign-in ended.
#[derive(Debug)]
pub enum SignIn {
    /// The password is right; `second_factor`: the person has one (an authenticator app or a
    /// passkey), for the login page to ask for.
    Success { user: User, second_factor: bool },
    /// Too many failures for this account from this source, or from this source: wait.
    Throttled { retry_after_secs: i64 },
    /// Unknown account, wrong password or disabled account: one answer for all three.
    Refused,
}

/// Check `username` and `password` from the request `meta`, within the login throttle.
pub async fn sign_in(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    limits: Limits,
    username: &str,
    password: &str,
) -> Result<SignIn, sqlx::Error> {
    check_password(pool, audit, meta, limits, username, password, "login.success").await
}

/// A signed-in person proves their password again (before changing it): the same throttle and
/// the same failure records as a sign-in; a success is recorded as `account.reauthenticated`.
pub async fn reauthenticate(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    limits: Limits,
    username: &str,
    password: &str,
) -> Result<SignIn, sqlx::Error> {
    check_password(pool, audit, meta, limits, username, password, "account.reauthenticated").await
}

async fn check_password(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    limits: Limits,
    username: &str,
    password: &str,
    success: &'static str,
) -> Result<SignIn, sqlx::Error> {
    // Throttling is keyed on the name as typed and the source together: the same for unknown
    // and known accounts, and a failure flood elsewhere cannot lock the person out from here.
    let account = username.to_lowercase();
    let source = meta.source.to_string();
    if let Some(until) = login_throttle::reserve(pool, &account, &source, limits).await? {
        let event = Event::new("login.throttled", Outcome::RateLimited).during(meta).digest_of(&account);
        audit.record(event).await;
        return Ok(SignIn::Throttled { retry_after_secs: (until - chrono::Utc::now()).num_seconds().max(1) });
    }
    let found = users::for_sign_in(pool, username).await?;
    // Disabled, unknown and password-less accounts are verified against the dummy hash: same
    // answer, same time.
    let hash = found.as_ref().filter(|(u, _)| !u.disabled).and_then(|(u, _)| u.password_hash.clone());
    let verified = crate::signin::password::verify(password.to_owned(), hash).await;
    let known = found.as_ref().map(|(u, _)| (u.id, u.disabled));
    let Some((user, second_factor)) = found.filter(|_| verified) else {
        // The reservation stays: it is this failure's count.
        login_throttle::failed(pool, &account, &source, limits).await?;
        audit.record(failure(meta, &account, known)).await;
        return Ok(SignIn::Refused);
    };
    login_throttle::release(pool, &account, &source).await?;
    audit.record(Event::new(success, Outcome::Success).during(meta).subject(user.id.to_string())).await;
    Ok(SignIn::Success { user, second_factor })
}

/// The record of a failed attempt; `known`: the account it named, if it exists (id, disabled).
fn failure(meta: &RequestMeta, account: &str, known: Option<(Uuid, bool)>) -> Event {
    let event = Event::new("login.failure", Outcome::Denied).during(meta).digest_of(account);
    match known {
        Some((id, disabled)) => {
            event.subject(id.to_string()).detail(if disabled { "account disabled" } else { "wrong password" })
        }
        None => event.detail("unknown account"),
    }
}
