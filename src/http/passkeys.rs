//! Passkeys in the browser (`passkeys`). Each ceremony is two posts from the page's one script
//! (`static/webauthn.js`): the options (`.../options`, JSON, the state kept in the session), then
//! the form with the authenticator's answer. Adding and removing live on the account page;
//! signing in with a passkey alone on the login page; a passkey as the second factor on the
//! second-factor page.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::browser::{self, see_other};
use super::pages::PageError;
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::signin::passkeys::{Ceremony, PasskeyError};
use crate::state::AppState;

impl From<PasskeyError> for PageError {
    fn from(e: PasskeyError) -> Self {
        match e {
            PasskeyError::Database(e) => e.into(),
            PasskeyError::Unavailable => Self::new(StatusCode::NOT_FOUND, "Passkeys are not available", e.to_string()),
            e => Self::new(
                StatusCode::UNAUTHORIZED,
                "The passkey did not work",
                format!("{}. Try again.", capitalized(&e.to_string())),
            ),
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

const EXPIRED: &str = "This page expired. Open it again.";
const REGISTER: &str = "register";
const SIGN_IN: &str = "sign-in";
const SECOND_FACTOR: &str = "second-factor";

/// The options for the page's script, with the state kept for the answer.
async fn options(session: &Session, purpose: &str, ceremony: Ceremony) -> Result<Response, PageError> {
    browser::start_ceremony(session, purpose, ceremony.state).await?;
    let mut res = axum::Json(ceremony.options).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The authenticator's answer from a posted form, bounded.
fn credential(params: &crate::oauth::params::Params) -> Result<&str, PageError> {
    params
        .get("credential")
        .filter(|c| c.len() <= 16 * 1024)
        .ok_or_else(|| PageError::bad_request("The passkey's answer is missing. Try again."))
}

pub async fn registration_options(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let user = browser::account_holder(&state.pool, &session).await?;
    let ceremony = state.passkeys.registration(&state.pool, &user).await?;
    options(&session, REGISTER, ceremony).await
}

pub async fn add(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let user = browser::account_holder(&state.pool, &session).await?;
    let name = params.get("name").map(str::trim).filter(|n| !n.is_empty()).unwrap_or("Passkey");
    let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
    let ceremony = browser::take_ceremony(&session, REGISTER).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    state.passkeys.register(&state.pool, &state.audit, &meta, user.id, ceremony, credential(&params)?, &name).await?;
    browser::second_factor_added(&state.pool, &session, &user, &meta, &headers).await?;
    Ok(see_other(&format!("{}?done=passkey-added", state.settings.issuer.join("/account"))))
}

pub async fn remove(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let user = browser::account_holder(&state.pool, &session).await?;
    let id =
        params.get("id").and_then(|i| i.parse().ok()).ok_or_else(|| PageError::bad_request("Choose a passkey."))?;
    if !crate::signin::passkeys::remove(&state.pool, &state.audit, &meta, user.id, id).await? {
        return Err(PageError::bad_request("That passkey was removed already."));
    }
    Ok(see_other(&format!("{}?done=passkey-removed", state.settings.issuer.join("/account"))))
}

pub async fn sign_in_options(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let ceremony = state.passkeys.sign_in()?;
    options(&session, SIGN_IN, ceremony).await
}

/// A passkey alone signs in: it is something the person has, unlocked by something they know or
/// are (user verification), so no second factor is asked for.
pub async fn sign_in(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let request = params.get("request");
    if request.is_some_and(|h| !authorization::valid_handle(h)) {
        return Err(PageError::expired_request());
    }
    let ceremony = browser::take_ceremony(&session, SIGN_IN).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let user = state.passkeys.finish_sign_in(&state.pool, &state.audit, &meta, ceremony, credential(&params)?).await?;
    super::login::finish(&state, &meta, &session, &headers, &user, request).await
}

pub async fn second_factor_options(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let half = browser::second_factor_pending(&session).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let ceremony = state
        .passkeys
        .second_factor(&state.pool, half.user_id)
        .await?
        .ok_or_else(|| PageError::bad_request("You have no passkey here."))?;
    options(&session, SECOND_FACTOR, ceremony).await
}

pub async fn second_factor(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let half = browser::second_factor_pending(&session).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let ceremony =
        browser::take_ceremony(&session, SECOND_FACTOR).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let pool = &state.pool;
    state
        .passkeys
        .finish_second_factor(pool, &state.audit, &meta, half.user_id, ceremony, credential(&params)?)
        .await?;
    super::second_factor::second_factor_given(&state, &meta, &session, &headers, &half).await
}
