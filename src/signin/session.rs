//! The browser session, typed: who is signed in, the CSRF token, the authorization requests this
//! browser started, a sign-in waiting for its second factor, an upstream round trip, a TOTP setup
//! and a WebAuthn ceremony under way. The session's keys are private to this file, so nothing
//! else reads or writes an entry by name. Sessions live in PostgreSQL (`store::sessions`).

use sqlx::PgPool;
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use super::authentication::SessionUser;
use super::federation::Pending;
use crate::oauth::secret::Secret;

pub use tower_sessions::session::Error as SessionError;

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

/// A sign-in past its first factor, waiting for the second: not signed in yet.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct HalfSignedIn {
    pub user_id: uuid::Uuid,
    /// The authorization request to go on with.
    pub request: Option<String>,
    /// When the password was given (Unix seconds).
    pub at: i64,
}

/// A WebAuthn ceremony under way in this browser: what for, and the server's state for it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Ceremony {
    purpose: String,
    state: serde_json::Value,
}

/// What a WebAuthn ceremony is for: an answer is checked only for the purpose it was started for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeremonyPurpose {
    Register,
    SignIn,
    SecondFactor,
}

impl CeremonyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::SignIn => "sign-in",
            Self::SecondFactor => "second-factor",
        }
    }
}

/// One browser's session.
#[derive(Clone, Debug)]
pub struct BrowserSession(Session);

impl From<Session> for BrowserSession {
    fn from(session: Session) -> Self {
        Self(session)
    }
}

impl BrowserSession {
    /// An entry. A store that cannot be read (the database unavailable) is an error (503), not
    /// an empty session: otherwise a signed-in person would be treated as signed out, a valid
    /// form as forged. An entry that does not decode (written by another version) is absent.
    async fn entry<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        match self.0.get::<T>(key).await {
            Ok(value) => Ok(value),
            Err(e @ SessionError::Store(tower_sessions::session_store::Error::Backend(_))) => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The signed-in user of this browser, if the session still counts (see
    /// [`SessionUser::still_valid`]) and is not one for setting up a second factor only.
    pub async fn signed_in(&self, pool: &PgPool) -> Result<Option<SessionUser>, SignedInError> {
        Ok(self.signed_in_for_account(pool).await?.filter(|u| !u.setup_only))
    }

    /// The same, also for a session signed in only to set up a second factor: the account page.
    pub async fn signed_in_for_account(&self, pool: &PgPool) -> Result<Option<SessionUser>, SignedInError> {
        let Some(user) = self.entry::<SessionUser>(USER).await? else { return Ok(None) };
        Ok(user.still_valid(pool).await?.then_some(user))
    }

    /// Sign the browser in: a new session id (so a session fixed by an attacker is worthless), a
    /// new CSRF token, and the user. Pending requests are kept.
    pub async fn log_in(&self, user: SessionUser) -> Result<(), SessionError> {
        self.0.cycle_id().await?;
        self.0.insert(CSRF, Secret::generate().expose()).await?;
        self.0.insert(USER, user).await
    }

    /// Sign out: the whole session goes.
    pub async fn log_out(&self) -> Result<(), SessionError> {
        self.0.flush().await
    }

    /// The session's CSRF token, created on first use.
    pub async fn csrf_token(&self) -> Result<String, SessionError> {
        if let Some(token) = self.0.get::<String>(CSRF).await? {
            return Ok(token);
        }
        let token = Secret::generate().expose().to_owned();
        self.0.insert(CSRF, &token).await?;
        Ok(token)
    }

    /// Whether a form carries this session's CSRF token. A session that cannot be read (the
    /// database unavailable) is an error, not a mismatch: the person did nothing wrong.
    pub async fn csrf_ok(&self, presented: Option<&str>) -> Result<bool, SessionError> {
        let (Some(presented), Some(expected)) = (presented, self.entry::<String>(CSRF).await?) else {
            return Ok(false);
        };
        Ok(presented.as_bytes().ct_eq(expected.as_bytes()).into())
    }

    /// Remember that this browser started an authorization request (by its handle's digest).
    /// The session gets its CSRF token here too, so the login or consent page that follows reads
    /// the session without writing it again.
    pub async fn add_request(&self, handle_digest: &str) -> Result<(), SessionError> {
        self.csrf_token().await?;
        let mut pending: Vec<String> = self.0.get(REQUESTS).await?.unwrap_or_default();
        pending.retain(|h| h != handle_digest);
        pending.push(handle_digest.to_owned());
        if pending.len() > MAX_PENDING {
            pending.remove(0);
        }
        self.0.insert(REQUESTS, pending).await
    }

    /// Whether this browser started the request `handle`, so another browser cannot complete it.
    pub async fn owns_request(&self, handle: &str) -> Result<bool, SessionError> {
        let digest = hex::encode(crate::oauth::secret::digest(handle));
        let pending: Vec<String> = self.entry(REQUESTS).await?.unwrap_or_default();
        Ok(pending.contains(&digest))
    }

    /// Remember the round trip to an upstream identity provider this browser is on (one at a time).
    pub async fn start_upstream_login(&self, pending: &Pending) -> Result<(), SessionError> {
        self.0.insert(UPSTREAM_LOGIN, pending).await
    }

    /// The round trip this browser was on, forgotten now: a callback is used once.
    pub async fn take_upstream_login(&self) -> Result<Option<Pending>, SessionError> {
        self.0.remove::<Pending>(UPSTREAM_LOGIN).await
    }

    /// Remember a sign-in waiting for its second factor. The session id changes, as at a sign-in,
    /// and whoever this browser was signed in as, it is not until this sign-in completes.
    pub(super) async fn start_second_factor(&self, half: &HalfSignedIn) -> Result<(), SessionError> {
        self.0.cycle_id().await?;
        self.0.remove::<SessionUser>(USER).await?;
        self.0.insert(SECOND_FACTOR, half).await
    }

    /// The sign-in waiting for its second factor, if it has not waited too long.
    pub async fn second_factor_pending(&self) -> Result<Option<HalfSignedIn>, SessionError> {
        let half: Option<HalfSignedIn> = self.0.get(SECOND_FACTOR).await?;
        Ok(half.filter(|h| chrono::Utc::now().timestamp() - h.at <= SECOND_FACTOR_WAIT))
    }

    pub(super) async fn end_second_factor(&self) -> Result<(), SessionError> {
        self.0.remove::<HalfSignedIn>(SECOND_FACTOR).await.map(|_| ())
    }

    /// The authenticator secret being set up on the account page (sealed).
    pub async fn start_totp_setup(&self, sealed: &str) -> Result<(), SessionError> {
        self.0.insert(TOTP_SETUP, sealed).await
    }

    pub async fn totp_setup(&self) -> Result<Option<String>, SessionError> {
        self.0.get(TOTP_SETUP).await
    }

    pub async fn end_totp_setup(&self) -> Result<(), SessionError> {
        self.0.remove::<String>(TOTP_SETUP).await.map(|_| ())
    }

    /// Keep a ceremony's state (one at a time) until the browser's answer comes.
    pub async fn start_ceremony(&self, purpose: CeremonyPurpose, state: serde_json::Value) -> Result<(), SessionError> {
        self.0.insert(WEBAUTHN, Ceremony { purpose: purpose.as_str().to_owned(), state }).await
    }

    /// The ceremony's state, used up: an answer is checked once, and only for its purpose.
    pub async fn take_ceremony(&self, purpose: CeremonyPurpose) -> Result<Option<serde_json::Value>, SessionError> {
        let ceremony: Option<Ceremony> = self.0.remove(WEBAUTHN).await?;
        Ok(ceremony.filter(|c| c.purpose == purpose.as_str()).map(|c| c.state))
    }
}

/// Why the signed-in user could not be read: the session store or the account's row.
#[derive(Debug, thiserror::Error)]
pub enum SignedInError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
