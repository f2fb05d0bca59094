//! The second factor in the browser: `GET/POST /login/second-factor` (after the password, a code
//! from the authenticator app or a recovery code), and on the account page
//! `POST /account/totp/setup` (a new secret to scan or type), `POST /account/totp/confirm` (a
//! code proves the app has it; the recovery codes are shown once), `POST /account/totp/disable`
//! (behind the current password).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_sessions::Session;

use super::browser::{self, see_other};
use super::pages::{PageError, RecoveryCodesPage, SecondFactorPage, TotpSetupPage, allow_passkey_script, render};
use crate::config::MfaPolicy;
use crate::oauth::totp;
use crate::platform::audit::RequestMeta;
use crate::signin::authentication::{self, SignIn};
use crate::signin::second_factor::{self, Check, SecondFactorError};
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

const EXPIRED: &str = "This sign-in expired. Go back to the application and start again.";

async fn code_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let half = browser::second_factor_pending(session).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let csrf = browser::csrf_token(session).await?;
    let totp = crate::signin::second_factor::set_up(&state.pool, half.user_id).await?;
    let passkey = state.passkeys.available() && crate::signin::passkeys::any(&state.pool, half.user_id).await?;
    let page = SecondFactorPage { base: state.settings.issuer.path(), csrf_token: &csrf, error, totp, passkey };
    let res = render(status, &page);
    Ok(if passkey { allow_passkey_script(res, &state.settings.issuer) } else { res })
}
pub async fn show(State(state): State<AppState>, session: Session) -> Result<Response, PageError> {
    if browser::second_factor_pending(&session).await?.is_none() {
        return Err(PageError::bad_request(EXPIRED));
    }
    code_page(&state, &session, StatusCode::OK, None).await
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, EXPIRED).await?;
    let half = browser::second_factor_pending(&session).await?.ok_or_else(|| PageError::bad_request(EXPIRED))?;
    let code = params.get("code").unwrap_or("");
    if code.is_empty() || code.len() > 64 {
        return code_page(&state, &session, StatusCode::BAD_REQUEST, Some("Enter the code.")).await;
    }
    let pool = &state.pool;
    match second_factor::check(
        pool,
        &state.settings.master_key,
        &state.audit,
        &meta,
        super::login::limits(&state),
        half.user_id,
        code,
    )
    .await?
    {
        Check::Accepted { .. } => {}
        Check::Refused => {
            let error = "That code is not correct, or was used already.";
            return code_page(&state, &session, StatusCode::UNAUTHORIZED, Some(error)).await;
        }
        Check::Throttled { retry_after_secs } => {
            let error = format!("Too many wrong codes. Try again in {retry_after_secs} seconds.");
            let mut res = code_page(&state, &session, StatusCode::TOO_MANY_REQUESTS, Some(&error)).await?;
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return Ok(res);
        }
    }
    second_factor_given(&state, &meta, &session, &headers, &half).await
}

/// The second factor was given (a code, or a passkey): the sign-in waiting for it completes.
pub(super) async fn second_factor_given(
    state: &AppState,
    meta: &RequestMeta,
    session: &Session,
    headers: &HeaderMap,
    half: &browser::HalfSignedIn,
) -> Result<Response, PageError> {
    browser::end_second_factor(session).await?;
    // The account may have been disabled while the second factor was given.
    let user = users::by_id(&state.pool, half.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| PageError::bad_request(EXPIRED))?;
    super::login::finish(state, meta, session, headers, &user, half.request.as_deref()).await
}

/// The signed-in person and the checked form, for the account page's second-factor forms.
async fn account_form(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(users::User, crate::oauth::params::Params), PageError> {
    let expired = "This form expired. Open your account page again.";
    let params = browser::checked_form(&state.settings.issuer, session, headers, body, expired).await?;
    if state.settings.mfa == MfaPolicy::Off {
        return Err(PageError::forbidden("Two-step sign-in is turned off on this server."));
    }
    Ok((browser::account_holder(&state.pool, session).await?, params))
}

async fn setup_page(
    state: &AppState,
    session: &Session,
    user: &users::User,
    secret: &[u8],
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let csrf = browser::csrf_token(session).await?;
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
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (user, _) = account_form(&state, &session, &headers, &body).await?;
    let secret = second_factor::new_secret();
    browser::start_totp_setup(&session, &second_factor::seal_pending(&state.settings.master_key, user.id, &secret)?)
        .await?;
    setup_page(&state, &session, &user, &secret, StatusCode::OK, None).await
}

pub async fn confirm(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (user, params) = account_form(&state, &session, &headers, &body).await?;
    let master = &state.settings.master_key;
    let pending = browser::totp_setup(&session)
        .await?
        .and_then(|sealed| second_factor::open_pending(master, user.id, &sealed))
        .ok_or_else(|| PageError::bad_request("Start the setup again from your account page."))?;
    let code = params.get("code").unwrap_or("");
    let enabled = second_factor::enable(&state.pool, master, &state.audit, &meta, user.id, &pending, code).await?;
    let Some(codes) = enabled else {
        let error = "That code does not match. Check the app's clock, and type the code it shows now.";
        return setup_page(&state, &session, &user, &pending, StatusCode::BAD_REQUEST, Some(error)).await;
    };
    browser::end_totp_setup(&session).await?;
    browser::second_factor_added(&state.pool, &session, &user, &meta, &headers).await?;
    Ok(render(StatusCode::OK, &RecoveryCodesPage { base: state.settings.issuer.path(), codes }))
}

pub async fn disable(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let (user, params) = account_form(&state, &session, &headers, &body).await?;
    let password = params.get("current_password").unwrap_or("");
    let checked = authentication::reauthenticate(
        &state.pool,
        &state.audit,
        &meta,
        super::login::limits(&state),
        &user.username,
        password,
    );
    match checked.await? {
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
