//! The second factor in the browser: `GET/POST /login/second-factor` (after the password, a code
//! from the authenticator app or a recovery code), and on the account page
//! `POST /account/totp/setup` (a new secret to scan or type), `POST /account/totp/confirm` (a
//! code proves the app has it; the recovery codes are shown once), `POST /account/totp/disable`
//! (behind the current password).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::browser::{self, go, retry_after, see_other};
use super::extract::{AccountForm, CheckedForm, PasswordHolder, PendingSecondFactor, SecondFactorForm};
use super::pages::{PageError, RecoveryCodesPage, SecondFactorPage, TotpSetupPage, allow_passkey_script, render};
use crate::config::MfaPolicy;
use crate::oauth::totp;
use crate::platform::audit::RequestMeta;
use crate::signin::authentication::{self, SignIn};
use crate::signin::second_factor::{self, Check, SecondFactorError};
use crate::signin::session::{BrowserSession, HalfSignedIn};
use crate::state::AppState;
use crate::store::users;

impl From<SecondFactorError> for PageError {
    fn from(e: SecondFactorError) -> Self {
        match e {
            SecondFactorError::Database(e) => e.into(),
            e => Self::internal(e),
        }
    }
}

async fn code_page(
    state: &AppState,
    session: &BrowserSession,
    half: &HalfSignedIn,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = session.csrf_token().await?;
    let totp = second_factor::set_up(&state.pool, half.user_id).await?;
    let passkey = state.passkeys.available() && crate::signin::passkeys::any(&state.pool, half.user_id).await?;
    let page = SecondFactorPage { base: state.settings.issuer.path(), csrf_token: &csrf, error, totp, passkey };
    let res = render(status, &page);
    Ok(if passkey { allow_passkey_script(res, &state.settings.issuer) } else { res })
}

pub async fn show(
    State(state): State<AppState>,
    session: BrowserSession,
    PendingSecondFactor(half): PendingSecondFactor,
) -> Result<Response, PageError> {
    code_page(&state, &session, &half, StatusCode::OK, None).await
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    PendingSecondFactor(half): PendingSecondFactor,
    CheckedForm(params, _): CheckedForm<SecondFactorForm>,
) -> Result<Response, PageError> {
    let code = params.get("code").unwrap_or("");
    if code.is_empty() || code.len() > 64 {
        return code_page(&state, &session, &half, StatusCode::BAD_REQUEST, Some("Enter the code.")).await;
    }
    let (pool, master) = (&state.pool, &state.settings.master_key);
    match second_factor::check(pool, master, &state.audit, &meta, state.login_limits(), half.user_id, code).await? {
        Check::Accepted { .. } => {}
        Check::Refused => {
            let error = "That code is not correct, or was used already.";
            return code_page(&state, &session, &half, StatusCode::UNAUTHORIZED, Some(error)).await;
        }
        Check::Throttled { retry_after_secs } => {
            let error = format!("Too many wrong codes. Try again in {retry_after_secs} seconds.");
            let page = code_page(&state, &session, &half, StatusCode::TOO_MANY_REQUESTS, Some(&error)).await?;
            return Ok(retry_after(page, retry_after_secs));
        }
    }
    let step = browser::journey(&state, &session, &meta, &headers).second_factor_given(&half).await?;
    Ok(go(&state.settings.issuer, step))
}

/// Two-step sign-in must be on for the account page's second-factor forms.
fn two_step_on(state: &AppState) -> Result<(), PageError> {
    if state.settings.mfa == MfaPolicy::Off {
        return Err(PageError::forbidden("Two-step sign-in is turned off on this server."));
    }
    Ok(())
}

async fn setup_page(
    state: &AppState,
    session: &BrowserSession,
    user: &users::User,
    secret: &[u8],
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = session.csrf_token().await?;
    let label = format!("Tessera {}", state.settings.issuer.as_str().split("://").nth(1).unwrap_or_default());
    let key = totp::base32(secret);
    let grouped: Vec<&str> = key.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    let page = TotpSetupPage {
        base: state.settings.issuer.path(),
        csrf_token: &csrf,
        key: &grouped.join(" "),
        uri: &totp::otpauth_uri(&label, &user.username, secret),
        error,
    };
    Ok(render(status, &page))
}

pub async fn setup(
    State(state): State<AppState>,
    session: BrowserSession,
    PasswordHolder(user): PasswordHolder,
    _: CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    two_step_on(&state)?;
    let secret = second_factor::new_secret();
    session.start_totp_setup(&second_factor::seal_pending(&state.settings.master_key, user.id, &secret)?).await?;
    setup_page(&state, &session, &user, &secret, StatusCode::OK, None).await
}

pub async fn confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    PasswordHolder(user): PasswordHolder,
    CheckedForm(params, _): CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    two_step_on(&state)?;
    let master = &state.settings.master_key;
    let pending = session
        .totp_setup()
        .await?
        .and_then(|sealed| second_factor::open_pending(master, user.id, &sealed))
        .ok_or_else(|| PageError::bad_request("Start the setup again from your account page."))?;
    let code = params.get("code").unwrap_or("");
    let enabled = second_factor::enable(&state.pool, master, &state.audit, &meta, user.id, &pending, code).await?;
    let Some(codes) = enabled else {
        let error = "That code does not match. Check the app's clock, and type the code it shows now.";
        return setup_page(&state, &session, &user, &pending, StatusCode::BAD_REQUEST, Some(error)).await;
    };
    session.end_totp_setup().await?;
    browser::journey(&state, &session, &meta, &headers).second_factor_added(&user).await?;
    Ok(render(StatusCode::OK, &RecoveryCodesPage { base: state.settings.issuer.path(), codes }))
}

pub async fn disable(
    State(state): State<AppState>,
    meta: RequestMeta,
    PasswordHolder(user): PasswordHolder,
    CheckedForm(params, _): CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    two_step_on(&state)?;
    let password = params.get("current_password").unwrap_or("");
    let limits = state.login_limits();
    match authentication::reauthenticate(&state.pool, &state.audit, &meta, limits, &user.username, password).await? {
        SignIn::Success { .. } => {}
        SignIn::Refused => {
            return Err(PageError::new(
                StatusCode::UNAUTHORIZED,
                "Not changed",
                "Your current password is not correct.",
            ));
        }
        SignIn::Throttled { retry_after_secs } => {
            let message = format!("Too many wrong passwords. Try again in {retry_after_secs} seconds.");
            return Err(PageError::new(StatusCode::TOO_MANY_REQUESTS, "Not changed", message));
        }
    }
    second_factor::remove(&state.pool, &state.audit, Some(&meta), user.id, "account.totp_disabled").await?;
    Ok(see_other(&format!("{}?done=totp-off", state.settings.issuer.join("/account"))))
}
