//! `/account`: the signed-in person's own page (`account`): connected applications with a
//! Disconnect button each, where they are signed in (end one, or all others), and a password
//! change. Every form carries the session's CSRF token and must come from our own pages; a
//! browser that is not signed in is sent to the login page, which comes back here.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::browser::{self, retry_after, see_other};
use super::extract::{AccountForm, AccountUser, CheckedForm};
use super::pages::{AccountPage, AppRow, PageError, PasskeyRow, SessionRow, allow_passkey_script, render};
use crate::config::MfaPolicy;
use crate::platform::audit::RequestMeta;
use crate::signin::account::{self, NewPassword, PasswordChange};
use crate::signin::authentication::SessionUser;
use crate::signin::session::BrowserSession;
use crate::state::AppState;
use crate::store::users;

/// What the page says after a change (`?done=`), from a fixed list: nothing from the URL is shown.
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "disconnected" => "The application was disconnected. It must ask you again to get access.",
        "session" => "That session was ended.",
        "sessions" => "Every other session was ended.",
        "password" => "Your password was changed. Your other sessions were ended.",
        "totp-off" => "Two-step sign-in is off: your password alone signs you in.",
        "passkey-added" => "The passkey was added.",
        "passkey-removed" => "The passkey was removed.",
        "mfa-required" => {
            "This server asks everyone for a second factor: set up an authenticator app below, then go back to the application."
        }
        _ => return None,
    })
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

async fn page(
    state: &AppState,
    session: &BrowserSession,
    user: &SessionUser,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, PageError> {
    let account =
        users::by_id(&state.pool, user.id).await?.ok_or_else(|| PageError::forbidden("You are not signed in."))?;
    let apps = account::connected_apps(&state.pool, user.id).await?;
    let sessions = account::sessions(&state.pool, user).await?;
    let csrf = session.csrf_token().await?;
    let second_factor = crate::signin::second_factor::status(&state.pool, user.id).await?;
    let passkeys_available = state.passkeys.available();
    let passkeys = crate::signin::passkeys::list(&state.pool, user.id)
        .await?
        .into_iter()
        .map(|k| PasskeyRow {
            id: k.id.to_string(),
            name: k.name,
            created_at: when(k.created_at),
            last_used_at: k.last_used_at.map_or_else(|| "never".to_owned(), when),
        })
        .collect();
    let has_password = account.password_hash.is_some();
    let page = AccountPage {
        passkeys_available,
        passkeys,
        second_factor,
        two_step_available: state.settings.mfa != MfaPolicy::Off,
        base: state.settings.issuer.path(),
        csrf_token: &csrf,
        username: &account.username,
        name: account.name.as_deref(),
        email: account.email.as_deref(),
        has_password,
        notice,
        error,
        apps: apps
            .into_iter()
            .map(|a| AppRow { first_approved: when(a.first_approved), last_used: when(a.last_used), app: a })
            .collect(),
        sessions: sessions
            .into_iter()
            .map(|s| SessionRow { signed_in_at: when(s.signed_in_at), expires_at: when(s.expires_at), session: s })
            .collect(),
    };
    let res = render(status, &page);
    Ok(if passkeys_available && has_password { allow_passkey_script(res, &state.settings.issuer) } else { res })
}

pub async fn show(
    State(state): State<AppState>,
    session: BrowserSession,
    user: Option<AccountUser>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    // Not signed in: to the login page, which comes back here.
    let Some(AccountUser(user)) = user else { return Ok(see_other(&state.settings.issuer.join("/login"))) };
    let params = browser::query_params(query.as_deref())?;
    page(&state, &session, &user, StatusCode::OK, notice(params.get("done")), None).await
}

fn done(state: &AppState, what: &str) -> Response {
    see_other(&format!("{}?done={what}", state.settings.issuer.join("/account")))
}

pub async fn disconnect(
    State(state): State<AppState>,
    meta: RequestMeta,
    AccountUser(user): AccountUser,
    CheckedForm(params, _): CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    let client_id = params.get("client_id").filter(|c| !c.is_empty() && c.len() <= 2048);
    let resource = params.get("resource_id").and_then(|r| r.parse::<uuid::Uuid>().ok());
    let (Some(client_id), Some(resource)) = (client_id, resource) else {
        return Err(PageError::bad_request("Choose an application to disconnect."));
    };
    account::disconnect(&state.pool, &state.revocation, &state.audit, &meta, user.id, client_id, resource).await?;
    Ok(done(&state, "disconnected"))
}

pub async fn end_session(
    State(state): State<AppState>,
    meta: RequestMeta,
    AccountUser(user): AccountUser,
    CheckedForm(params, _): CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    if params.get("others") == Some("all") {
        account::end_other_sessions(&state.pool, &state.audit, &meta, &user).await?;
        return Ok(done(&state, "sessions"));
    }
    let sid = params.get("sid").filter(|s| !s.is_empty() && s.len() <= 64 && *s != user.sid);
    let Some(sid) = sid else {
        return Err(PageError::bad_request("Choose another session to end (sign out to end this one)."));
    };
    if !account::end_session(&state.pool, &state.audit, &meta, user.id, sid).await? {
        return Err(PageError::bad_request("That session has already ended."));
    }
    Ok(done(&state, "session"))
}

pub async fn change_password(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    AccountUser(user): AccountUser,
    CheckedForm(params, _): CheckedForm<AccountForm>,
) -> Result<Response, PageError> {
    let account =
        users::by_id(&state.pool, user.id).await?.ok_or_else(|| PageError::forbidden("You are not signed in."))?;
    let new = NewPassword {
        current: params.get("current_password").unwrap_or(""),
        new: params.get("new_password").unwrap_or(""),
        confirm: params.get("confirm_password").unwrap_or(""),
        disconnect_apps: params.get("disconnect_apps") == Some("yes"),
    };
    let limits = state.login_limits();
    let (status, error) = match account::change_password(&state.pool, &state.audit, &meta, limits, &account, &new)
        .await?
    {
        PasswordChange::Changed { .. } => {
            // Every session ended with the change, this one too: sign this browser in again.
            let account =
                users::by_id(&state.pool, user.id).await?.ok_or_else(|| PageError::forbidden("Sign in again."))?;
            // (A session that may only set up a second factor stays one: a new password is no
            // second factor.)
            let again = SessionUser { setup_only: user.setup_only, ..SessionUser::signed_in_now(&account) }
                .from_device(&meta, browser::user_agent(&headers));
            session.log_in(again).await?;
            return Ok(done(&state, "password"));
        }
        PasswordChange::WrongPassword => (StatusCode::UNAUTHORIZED, "Your current password is not correct.".to_owned()),
        PasswordChange::Mismatch => (StatusCode::BAD_REQUEST, "The two new passwords differ.".to_owned()),
        PasswordChange::Rejected(e) => (StatusCode::BAD_REQUEST, format!("The new password was refused: {e}.")),
        PasswordChange::NoPassword => (
            StatusCode::BAD_REQUEST,
            "Your account signs in through an identity provider: it has no password.".to_owned(),
        ),
        PasswordChange::Throttled { retry_after_secs } => {
            let message = format!("Too many wrong passwords. Try again in {retry_after_secs} seconds.");
            let res = page(&state, &session, &user, StatusCode::TOO_MANY_REQUESTS, None, Some(&message)).await?;
            return Ok(retry_after(res, retry_after_secs));
        }
    };
    page(&state, &session, &user, status, None, Some(&error)).await
}
