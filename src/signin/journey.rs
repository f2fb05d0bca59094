//! The sign-in journey, as one type that owns its transitions:
//!
//! ```text
//! first factor ──(password, and the account has a second factor)──▶ half signed in ──(code or passkey)──┐
//!      │       ──(password, TESSERA_MFA=required, no second factor)──▶ setup-only session (account page) │
//!      └──(password alone, passkey, upstream provider)──▶ signed in ◀────────────────────────────────────┘
//!                                                            │
//!                                      on to the authorization request that sent the person here
//!                                      (this browser's own), or to their account page
//! ```
//!
//! The half-signed-in state lives in the browser session ([`BrowserSession`]); the handlers only
//! parse the forms, call these steps, and send the browser where the [`Step`] says.

use sqlx::PgPool;

use super::authentication::SessionUser;
use super::session::{BrowserSession, HalfSignedIn, SessionError, SignedInError};
use crate::config::MfaPolicy;
use crate::grant::authorization::{self, AuthorizeError};
use crate::store::users::{self, User};

/// How the first factor was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstFactor {
    /// A password; `second_factor` says whether the account has a second factor set up.
    Password { second_factor: bool },
    /// A passkey alone: something the person has, unlocked by something they know or are (user
    /// verification), so no second factor is asked for.
    Passkey,
    /// An upstream identity provider, which asks for its own second factor.
    Upstream,
}

/// Where the browser goes next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// To the second-factor page.
    SecondFactor,
    /// Signed in only to set up a second factor (`TESSERA_MFA=required`): to the account page.
    SetUpSecondFactor,
    /// Signed in for no application: to the person's own page.
    Account,
    /// Signed in, and the authorization request goes on here (consent, or back to the client).
    Continue(String),
}

#[derive(Debug, thiserror::Error)]
pub enum JourneyError {
    /// The sign-in waited too long for its second factor, or the account went away meanwhile.
    #[error("the sign-in expired")]
    Expired,
    /// The authorization request to go on with is gone, or is not this browser's.
    #[error(transparent)]
    Authorization(#[from] AuthorizeError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<SignedInError> for JourneyError {
    fn from(e: SignedInError) -> Self {
        match e {
            SignedInError::Session(e) => Self::Session(e),
            SignedInError::Database(e) => Self::Database(e),
        }
    }
}

/// One browser's way through signing in.
pub struct Journey<'a> {
    pub pool: &'a PgPool,
    pub session: &'a BrowserSession,
    pub mfa: MfaPolicy,
    /// The authorization requests' rules (and the request's metadata: where the person is).
    pub authorization: authorization::Parts<'a>,
    /// The browser's `User-Agent`, for the person's list of sessions.
    pub user_agent: Option<&'a str>,
}

impl Journey<'_> {
    /// The first factor was given for `user`, who came for the authorization request `request`
    /// (a handle), if any.
    pub async fn first_factor(
        &self,
        user: &User,
        factor: FirstFactor,
        request: Option<&str>,
    ) -> Result<Step, JourneyError> {
        if let FirstFactor::Password { second_factor } = factor {
            if self.mfa != MfaPolicy::Off && second_factor {
                let at = chrono::Utc::now().timestamp();
                let half = HalfSignedIn { user_id: user.id, request: request.map(str::to_owned), at };
                self.session.start_second_factor(&half).await?;
                return Ok(Step::SecondFactor);
            }
            if self.mfa == MfaPolicy::Required {
                // Everyone needs a second factor here: this session may only set one up.
                let setup_only = SessionUser { setup_only: true, ..self.session_user(user) };
                self.session.log_in(setup_only).await?;
                return Ok(Step::SetUpSecondFactor);
            }
        }
        self.signed_in(user, request).await
    }

    /// The second factor was given (a code, or a passkey): the sign-in waiting for it completes.
    pub async fn second_factor_given(&self, half: &HalfSignedIn) -> Result<Step, JourneyError> {
        self.session.end_second_factor().await?;
        // The account may have been disabled while the second factor was given.
        let user = users::by_id(self.pool, half.user_id).await?.filter(|u| !u.disabled).ok_or(JourneyError::Expired)?;
        self.signed_in(&user, half.request.as_deref()).await
    }

    /// After a second factor was set up on the account page: a session signed in only to set one
    /// up now counts in full, since the person has just shown both factors.
    pub async fn second_factor_added(&self, user: &User) -> Result<(), JourneyError> {
        if self.session.signed_in_for_account(self.pool).await?.is_some_and(|u| u.setup_only) {
            self.session.log_in(self.session_user(user)).await?;
        }
        Ok(())
    }

    /// Sign the browser in as `user` (every factor asked for given) and go on: to the pending
    /// authorization request, which must be this browser's, or to the account page.
    async fn signed_in(&self, user: &User, request: Option<&str>) -> Result<Step, JourneyError> {
        let signed_in = self.session_user(user);
        self.session.log_in(signed_in.clone()).await?;
        let Some(handle) = request else { return Ok(Step::Account) };
        if !self.session.owns_request(handle).await? {
            return Err(AuthorizeError::Expired.into());
        }
        Ok(Step::Continue(authorization::signed_in_for(&self.authorization, handle, &signed_in).await?))
    }

    fn session_user(&self, user: &User) -> SessionUser {
        SessionUser::signed_in_now(user).from_device(self.authorization.meta, self.user_agent)
    }
}
