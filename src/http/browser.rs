//! What the browser pages share: the session (signed-in user, CSRF token, the authorization
//! requests this browser started), form parsing, and the cross-site checks on every form POST.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use super::pages::PageError;
use crate::config::Issuer;
use crate::oauth::params::{ParamError, Params};
pub use crate::signin::authentication::SessionUser;
use crate::signin::federation::Pending;

const USER: &str = "user";
const CSRF: &str = "csrf";
const REQUESTS: &str = "requests";
const UPSTREAM_LOGIN: &str = "upstream_login";
const SECOND_FACTOR: &str = "second_factor";
const TOTP_SETUP: &str = "totp_setup";
const WEBAUTHN: &str = "webauthn";
/// How long a password sign-in waits for its second factor.
const SECOND_FACTOR_WAIT: i64 = 300;
/// Authorization requests one browser may have pending at once.
const MAX_PENDING: usize = 10;

/// A session entry. A store that cannot be read (the database unavailable) is an error (503),
/// not an empty session: otherwise a signed-in person would be treated as signed out, a valid
/// form as forged. An entry that does not decode (written by another version) is absent.
async fn entry<T: serde::de::DeserializeOwned>(session: &Session, key: &str) -> Result<Option<T>, PageError> {
    match session.get::<T>(key).await {
        Ok(value) => Ok(value),
        Err(e @ tower_sessions::session::Error::Store(tower_sessions::session_store::Error::Backend(_))) => {
            Err(e.into())
        }
        Err(_) => Ok(None),
    }
}

async fn user(session: &Session) -> Result<Option<SessionUser>, PageError> {
    entry(session, USER).await
}

/// The signed-in user of this browser, if the session still counts (see
/// [`SessionUser::still_valid`]).
pub async fn signed_in(pool: &sqlx::PgPool, session: &Session) -> Result<Option<SessionUser>, PageError> {
    Ok(signed_in_for_account(pool, session).await?.filter(|u| !u.setup_only))
}

/// The same, also for a session signed in only to set up a second factor: the account page.
pub async fn signed_in_for_account(pool: &sqlx::PgPool, session: &Session) -> Result<Option<SessionUser>, PageError> {
    let Some(user) = user(session).await? else { return Ok(None) };
    Ok(user.still_valid(pool).await?.then_some(user))
}

/// Log the user in: a new session id (so a session fixed by an attacker is worthless), a new
/// CSRF token, and the user. Pending requests are kept.
pub async fn log_in(session: &Session, user: SessionUser) -> Result<(), tower_sessions::session::Error> {
    session.cycle_id().await?;
    session.insert(CSRF, crate::oauth::secret::Secret::generate().expose()).await?;
    session.insert(USER, user).await
}

pub async fn log_out(session: &Session) -> Result<(), tower_sessions::session::Error> {
    session.flush().await
}

/// The session's CSRF token, created on first use.
pub async fn csrf_token(session: &Session) -> Result<String, tower_sessions::session::Error> {
    if let Some(token) = session.get::<String>(CSRF).await? {
        return Ok(token);
    }
    let token = crate::oauth::secret::Secret::generate().expose().to_owned();
    session.insert(CSRF, &token).await?;
    Ok(token)
}

/// Whether the form carries this session's CSRF token. A session that cannot be read (the
/// database unavailable) is an error, not a mismatch: the person did nothing wrong.
pub async fn csrf_ok(session: &Session, presented: Option<&str>) -> Result<bool, PageError> {
    let (Some(presented), Some(expected)) = (presented, entry::<String>(session, CSRF).await?) else {
        return Ok(false);
    };
    Ok(presented.as_bytes().ct_eq(expected.as_bytes()).into())
}

/// Fetch-metadata and Origin checks: a form POST must come from our own pages.
///
/// Browsers send `Sec-Fetch-Site` (which a page cannot forge) and decide on it alone: our pages
/// use `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` even on
/// same-origin POSTs. Without it (older browsers, scripts), a present `Origin` must be ours.
pub fn same_origin(headers: &HeaderMap, issuer: &Issuer) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin == issuer_origin(issuer),
    }
}

fn issuer_origin(issuer: &Issuer) -> &str {
    let s = issuer.as_str();
    let after = s.find("://").map_or(0, |i| i + 3);
    match s[after..].find('/') {
        Some(i) => &s[..after + i],
        None => s,
    }
}

/// Remember that this browser started an authorization request (by its handle's digest). The
/// session gets its CSRF token here too, so the login or consent page that follows reads the
/// session without writing it again.
pub async fn add_request(session: &Session, handle_digest: &str) -> Result<(), tower_sessions::session::Error> {
    csrf_token(session).await?;
    let mut pending: Vec<String> = session.get(REQUESTS).await?.unwrap_or_default();
    pending.retain(|h| h != handle_digest);
    pending.push(handle_digest.to_owned());
    if pending.len() > MAX_PENDING {
        pending.remove(0);
    }
    session.insert(REQUESTS, pending).await
}

/// Whether this browser started the request, so another browser cannot complete it.
pub async fn owns_request(session: &Session, handle_digest: &str) -> Result<bool, PageError> {
    let pending: Vec<String> = entry(session, REQUESTS).await?.unwrap_or_default();
    Ok(pending.iter().any(|h| h == handle_digest))
}

/// Remember the round trip to an upstream identity provider this browser is on (one at a time).
pub async fn start_upstream_login(session: &Session, pending: &Pending) -> Result<(), tower_sessions::session::Error> {
    session.insert(UPSTREAM_LOGIN, pending).await
}

/// The round trip this browser was on, forgotten now: a callback is used once.
pub async fn take_upstream_login(session: &Session) -> Result<Option<Pending>, tower_sessions::session::Error> {
    session.remove::<Pending>(UPSTREAM_LOGIN).await
}

/// The browser's `User-Agent`, if it is text.
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
}

/// A sign-in past its password, waiting for the second factor: not signed in yet.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HalfSignedIn {
    pub user_id: uuid::Uuid,
    /// The authorization request to go on with.
    pub request: Option<String>,
    /// When the password was given (Unix seconds).
    pub at: i64,
}

/// Remember a sign-in waiting for its second factor. The session id changes, as at a sign-in.
pub async fn start_second_factor(session: &Session, half: &HalfSignedIn) -> Result<(), tower_sessions::session::Error> {
    session.cycle_id().await?;
    // Whoever this browser was signed in as, it is not until this sign-in completes.
    session.remove::<SessionUser>(USER).await?;
    session.insert(SECOND_FACTOR, half).await
}

/// The sign-in waiting for its second factor, if it has not waited too long.
pub async fn second_factor_pending(session: &Session) -> Result<Option<HalfSignedIn>, tower_sessions::session::Error> {
    let half: Option<HalfSignedIn> = session.get(SECOND_FACTOR).await?;
    Ok(half.filter(|h| chrono::Utc::now().timestamp() - h.at <= SECOND_FACTOR_WAIT))
}

pub async fn end_second_factor(session: &Session) -> Result<(), tower_sessions::session::Error> {
    session.remove::<HalfSignedIn>(SECOND_FACTOR).await.map(|_| ())
}

/// The authenticator secret being set up on the account page (sealed).
pub async fn start_totp_setup(session: &Session, sealed: &str) -> Result<(), tower_sessions::session::Error> {
    session.insert(TOTP_SETUP, sealed).await
}

pub async fn totp_setup(session: &Session) -> Result<Option<String>, tower_sessions::session::Error> {
    session.get(TOTP_SETUP).await
}

pub async fn end_totp_setup(session: &Session) -> Result<(), tower_sessions::session::Error> {
    session.remove::<String>(TOTP_SETUP).await.map(|_| ())
}

/// The signed-in person (a setup-only session too) whose account has a password: second
/// factors and passkeys are for accounts that sign in here, not through an identity provider.
pub async fn account_holder(pool: &sqlx::PgPool, session: &Session) -> Result<crate::store::users::User, PageError> {
    let signed_in = signed_in_for_account(pool, session)
        .await?
        .ok_or_else(|| PageError::forbidden("You are not signed in any more. Sign in again."))?;
    let user =
        crate::store::users::by_id(pool, signed_in.id).await?.ok_or_else(|| PageError::forbidden("Sign in again."))?;
    if user.password_hash.is_none() {
        return Err(PageError::bad_request(
            "Your account signs in through an identity provider, which asks for its own second factor.",
        ));
    }
    Ok(user)
}

/// After a second factor was set up: a session signed in only to set one up
/// (`TESSERA_MFA=required`) now counts in full, since the person has just shown both factors.
pub async fn second_factor_added(
    pool: &sqlx::PgPool,
    session: &Session,
    user: &crate::store::users::User,
    meta: &crate::platform::audit::RequestMeta,
    headers: &HeaderMap,
) -> Result<(), PageError> {
    if signed_in_for_account(pool, session).await?.is_some_and(|u| u.setup_only) {
        log_in(session, SessionUser::signed_in_now(user).from_device(meta, user_agent(headers))).await?;
    }
    Ok(())
}

/// A WebAuthn ceremony under way in this browser: what for, and the server's state for it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Ceremony {
    purpose: String,
    state: serde_json::Value,
}

/// Keep a ceremony's state (one at a time) until the browser's answer comes.
pub async fn start_ceremony(
    session: &Session,
    purpose: &str,
    state: serde_json::Value,
) -> Result<(), tower_sessions::session::Error> {
    session.insert(WEBAUTHN, Ceremony { purpose: purpose.to_owned(), state }).await
}

/// The ceremony's state, used up: an answer is checked once, and only for its purpose.
pub async fn take_ceremony(
    session: &Session,
    purpose: &str,
) -> Result<Option<serde_json::Value>, tower_sessions::session::Error> {
    let ceremony: Option<Ceremony> = session.remove(WEBAUTHN).await?;
    Ok(ceremony.filter(|c| c.purpose == purpose).map(|c| c.state))
}

/// `303 See Other`: the browser follows with a GET, also after a form POST.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(header::LOCATION, value);
            res
        }
        Err(_) => {
            crate::web::error::ApiError::internal("redirect location is not a valid header value").into_response()
        }
    }
}

#[derive(Debug)]
pub enum FormError {
    ContentType,
    Params(ParamError),
    Repeated(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ContentType => f.write_str("the body must be application/x-www-form-urlencoded"),
            Self::Params(e) => e.fmt(f),
            Self::Repeated(name) => write!(f, "parameter {name} must not be repeated"),
        }
    }
}

/// The form of a POST from one of our pages: from our own origin, well formed. A refusal is
/// the page to show.
pub fn posted_form(issuer: &Issuer, headers: &HeaderMap, body: &Bytes) -> Result<Params, PageError> {
    if !same_origin(headers, issuer) {
        return Err(PageError::forbidden("This form was submitted from another site."));
    }
    form(headers, body).map_err(|e| PageError::bad_request(format!("The form could not be read: {e}.")))
}

/// A posted form that also carries this session's CSRF token; `expired` is what the page says
/// when the token is missing or stale.
pub async fn checked_form(
    issuer: &Issuer,
    session: &Session,
    headers: &HeaderMap,
    body: &Bytes,
    expired: &'static str,
) -> Result<Params, PageError> {
    let params = posted_form(issuer, headers, body)?;
    if !csrf_ok(session, params.get("csrf_token")).await? {
        return Err(PageError::forbidden(expired));
    }
    Ok(params)
}

/// The query of a page request; malformed is a page error.
pub fn query_params(query: Option<&str>) -> Result<Params, PageError> {
    Params::parse(query.unwrap_or("").as_bytes())
        .map_err(|e| PageError::bad_request(format!("Malformed request: {e}.")))
}

/// Parse an `application/x-www-form-urlencoded` body, refusing other content types and
/// repeated parameters.
pub fn form(headers: &HeaderMap, body: &Bytes) -> Result<Params, FormError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError::ContentType);
    }
    let params = Params::parse(body).map_err(FormError::Params)?;
    if let Some(name) = params.first_repeated() {
        return Err(FormError::Repeated(name.to_owned()));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks() {
        let issuer = Issuer::parse("https://auth.example.com/tenant").unwrap();
        assert_eq!(issuer_origin(&issuer), "https://auth.example.com");
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        h.insert(header::ORIGIN, "https://auth.example.com".parse().unwrap());
        assert!(same_origin(&h, &issuer));
        // Under no-referrer, browsers send Origin: null on same-origin form posts.
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        // Without fetch metadata, Origin decides.
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert(header::ORIGIN, "https://auth.example.com".parse().unwrap());
        assert!(same_origin(&h, &issuer));
    }
}
