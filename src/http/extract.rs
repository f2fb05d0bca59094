//! Extractors for the browser pages: what every page handler used to do by hand before its first
//! real line. A refusal is the [`PageError`] to show.
//!
//! - [`BrowserSession`]: the typed session (`signin::session`).
//! - [`CheckedForm`]: a form POST from our own pages (Fetch Metadata / `Origin`), well formed,
//!   carrying this session's CSRF token; what the page says when the token is stale depends on
//!   the family of page ([`FormKind`]).
//! - [`PostedForm`]: the same without the CSRF check (the login form answers that one itself).
//! - [`SignedIn`], [`AccountUser`], [`PasswordHolder`]: who is signed in, at three strengths.
//! - [`PendingSecondFactor`]: a sign-in waiting for its second factor.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use tower_sessions::Session;

use super::browser::{form, same_origin};
use super::pages::{PageError, SIGN_IN_EXPIRED};
use crate::oauth::params::Params;
use crate::signin::authentication::SessionUser;
use crate::signin::session::{BrowserSession, HalfSignedIn};
use crate::state::AppState;
use crate::store::users::{self, User};

impl<S: Send + Sync> FromRequestParts<S> for BrowserSession {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, why)| PageError::internal(format!("no session: {why}")))?;
        Ok(Self::from(session))
    }
}

/// What a stale form says, per family of pages.
pub trait FormKind: Send + Sync + 'static {
    const EXPIRED: &'static str;
}

/// The account page's forms.
pub struct AccountForm;
impl FormKind for AccountForm {
    const EXPIRED: &'static str = "This form expired. Open your account page again.";
}

/// Forms on the way from an application and back to it (consent, upstream sign-in buttons).
pub struct ApplicationForm;
impl FormKind for ApplicationForm {
    const EXPIRED: &'static str = "This form expired. Go back to the application and start again.";
}

/// The second-factor page.
pub struct SecondFactorForm;
impl FormKind for SecondFactorForm {
    const EXPIRED: &'static str = SIGN_IN_EXPIRED;
}

/// The passkey ceremonies' posts (from the pages' script).
pub struct PasskeyForm;
impl FormKind for PasskeyForm {
    const EXPIRED: &'static str = "This page expired. Open it again.";
}

/// The sign-out form.
pub struct LogoutForm;
impl FormKind for LogoutForm {
    const EXPIRED: &'static str = "This form expired. Go back to the application and sign out again.";
}

/// The form of a POST from one of our pages: from our own origin, well formed.
pub struct PostedForm(pub Params);

impl FromRequest<AppState> for PostedForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !same_origin(req.headers(), &state.settings.issuer) {
            return Err(PageError::forbidden("This form was submitted from another site."));
        }
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            PageError::new(e.status(), "Invalid request", format!("The form could not be read: {}.", e.body_text()))
        })?;
        let params = form(content_type.as_ref(), &body)
            .map_err(|e| PageError::bad_request(format!("The form could not be read: {e}.")))?;
        Ok(Self(params))
    }
}

/// A posted form that also carries this session's CSRF token.
pub struct CheckedForm<K: FormKind>(pub Params, pub PhantomData<K>);

impl<K: FormKind> FromRequest<AppState> for CheckedForm<K> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = BrowserSession::from_request_parts(&mut parts, state).await?;
        let PostedForm(params) = PostedForm::from_request(Request::from_parts(parts, body), state).await?;
        if !session.csrf_ok(params.get("csrf_token")).await? {
            return Err(PageError::forbidden(K::EXPIRED));
        }
        Ok(Self(params, PhantomData))
    }
}

/// The signed-in person, fully signed in (not a setup-only session).
pub struct SignedIn(pub SessionUser);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        <Self as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| PageError::forbidden("You are not signed in."))
    }
}

impl OptionalFromRequestParts<AppState> for SignedIn {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        let session = BrowserSession::from_request_parts(parts, state).await?;
        Ok(session.signed_in(&state.pool).await?.map(Self))
    }
}

/// The signed-in person on their account page: a setup-only session counts too.
pub struct AccountUser(pub SessionUser);

impl FromRequestParts<AppState> for AccountUser {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        <Self as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| PageError::forbidden("You are not signed in any more. Sign in again."))
    }
}

impl OptionalFromRequestParts<AppState> for AccountUser {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        let session = BrowserSession::from_request_parts(parts, state).await?;
        Ok(session.signed_in_for_account(&state.pool).await?.map(Self))
    }
}

/// The signed-in person (a setup-only session too) whose account has a password: second factors
/// and passkeys are for accounts that sign in here, not through an identity provider.
pub struct PasswordHolder(pub User);

impl FromRequestParts<AppState> for PasswordHolder {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let AccountUser(signed_in) =
            <AccountUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let user =
            users::by_id(&state.pool, signed_in.id).await?.ok_or_else(|| PageError::forbidden("Sign in again."))?;
        if user.password_hash.is_none() {
            return Err(PageError::bad_request(
                "Your account signs in through an identity provider, which asks for its own second factor.",
            ));
        }
        Ok(Self(user))
    }
}

/// The sign-in waiting for its second factor, if it has not waited too long.
pub struct PendingSecondFactor(pub HalfSignedIn);

impl FromRequestParts<AppState> for PendingSecondFactor {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let session = BrowserSession::from_request_parts(parts, state).await?;
        let half = session.second_factor_pending().await?.ok_or_else(|| PageError::bad_request(SIGN_IN_EXPIRED))?;
        Ok(Self(half))
    }
}
