//! Passkeys in the browser (`passkeys`). Each ceremony is two posts from the page's one script
//! (`static/webauthn.js`): the options (`.../options`, JSON, the state kept in the session), then
//! the form with the authenticator's answer. Adding and removing live on the account page;
//! signing in with a passkey alone on the login page; a passkey as the second factor on the
//! second-factor page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::browser::{self, go, see_other};
use super::extract::{CheckedForm, PasskeyForm, PasswordHolder, PendingSecondFactor};
use super::pages::PageError;
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::signin::journey::FirstFactor;
use crate::signin::passkeys::{Ceremony, PasskeyError};
use crate::signin::session::{BrowserSession, CeremonyPurpose};
use crate::state::AppState;
use crate::web::headers::no_store;

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

/// The options for the page's script, with the state kept for the answer.
async fn options(
    session: &BrowserSession,
    purpose: CeremonyPurpose,
    ceremony: Ceremony,
) -> Result<Response, PageError> {
    session.start_ceremony(purpose, ceremony.state).await?;
    Ok(no_store(axum::Json(ceremony.options)))
}

/// The ceremony this answer is for, used up.
async fn ceremony(session: &BrowserSession, purpose: CeremonyPurpose) -> Result<serde_json::Value, PageError> {
    session.take_ceremony(purpose).await?.ok_or_else(|| PageError::bad_request(EXPIRED))
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
    session: BrowserSession,
    PasswordHolder(user): PasswordHolder,
    _: CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let ceremony = state.passkeys.registration(&state.pool, &user).await?;
    options(&session, CeremonyPurpose::Register, ceremony).await
}

pub async fn add(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    PasswordHolder(user): PasswordHolder,
    CheckedForm(params, _): CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let name = params.get("name").map(str::trim).filter(|n| !n.is_empty()).unwrap_or("Passkey");
    let name: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
    let ceremony = ceremony(&session, CeremonyPurpose::Register).await?;
    state.passkeys.register(&state.pool, &state.audit, &meta, user.id, ceremony, credential(&params)?, &name).await?;
    browser::journey(&state, &session, &meta, &headers).second_factor_added(&user).await?;
    Ok(see_other(&format!("{}?done=passkey-added", state.settings.issuer.join("/account"))))
}

pub async fn remove(
    State(state): State<AppState>,
    meta: RequestMeta,
    PasswordHolder(user): PasswordHolder,
    CheckedForm(params, _): CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let id =
        params.get("id").and_then(|i| i.parse().ok()).ok_or_else(|| PageError::bad_request("Choose a passkey."))?;
    if !crate::signin::passkeys::remove(&state.pool, &state.audit, &meta, user.id, id).await? {
        return Err(PageError::bad_request("That passkey was removed already."));
    }
    Ok(see_other(&format!("{}?done=passkey-removed", state.settings.issuer.join("/account"))))
}

pub async fn sign_in_options(
    State(state): State<AppState>,
    session: BrowserSession,
    _: CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let ceremony = state.passkeys.sign_in()?;
    options(&session, CeremonyPurpose::SignIn, ceremony).await
}

/// A passkey alone signs in (see `FirstFactor::Passkey`).
pub async fn sign_in(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    CheckedForm(params, _): CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let request = params.get("request");
    if request.is_some_and(|h| !authorization::valid_handle(h)) {
        return Err(PageError::expired_request());
    }
    let ceremony = ceremony(&session, CeremonyPurpose::SignIn).await?;
    let user = state.passkeys.finish_sign_in(&state.pool, &state.audit, &meta, ceremony, credential(&params)?).await?;
    let step =
        browser::journey(&state, &session, &meta, &headers).first_factor(&user, FirstFactor::Passkey, request).await?;
    Ok(go(&state.settings.issuer, step))
}

pub async fn second_factor_options(
    State(state): State<AppState>,
    session: BrowserSession,
    PendingSecondFactor(half): PendingSecondFactor,
    _: CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let ceremony = state
        .passkeys
        .second_factor(&state.pool, half.user_id)
        .await?
        .ok_or_else(|| PageError::bad_request("You have no passkey here."))?;
    options(&session, CeremonyPurpose::SecondFactor, ceremony).await
}

pub async fn second_factor(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    PendingSecondFactor(half): PendingSecondFactor,
    CheckedForm(params, _): CheckedForm<PasskeyForm>,
) -> Result<Response, PageError> {
    let ceremony = ceremony(&session, CeremonyPurpose::SecondFactor).await?;
    let pool = &state.pool;
    state
        .passkeys
        .finish_second_factor(pool, &state.audit, &meta, half.user_id, ceremony, credential(&params)?)
        .await?;
    let step = browser::journey(&state, &session, &meta, &headers).second_factor_given(&half).await?;
    Ok(go(&state.settings.issuer, step))
}
