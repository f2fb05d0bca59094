//! `GET/POST /login`: the form, then `authentication::sign_in` (one message for an unknown user
//! and a wrong password, and the same cost), then the sign-in journey (`signin::journey`): the
//! second factor, or back to the pending authorization request.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::browser::{self, go, retry_after};
use super::extract::PostedForm;
use super::pages::{LoginPage, PageError, allow_passkey_script, render};
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::signin::authentication::{self, SignIn};
use crate::signin::journey::FirstFactor;
use crate::signin::session::BrowserSession;
use crate::state::AppState;

const BAD_CREDENTIALS: &str = "Incorrect username or password.";

struct LoginForm<'a> {
    request: Option<&'a str>,
    client_name: Option<String>,
    username: &'a str,
    error: Option<&'a str>,
}

async fn login_page(
    state: &AppState,
    session: &BrowserSession,
    status: StatusCode,
    form: LoginForm<'_>,
) -> Result<Response, PageError> {
    let csrf = session.csrf_token().await?;
    let providers = crate::signin::federation::providers::buttons(&state.pool).await?;
    let passkeys = state.passkeys.available();
    let page = render(
        status,
        &LoginPage {
            base: state.settings.issuer.path(),
            csrf_token: &csrf,
            request: form.request,
            client_name: form.client_name.as_deref(),
            username: form.username,
            error: form.error,
            providers,
            password_login: state.settings.password_login,
            passkeys,
        },
    );
    Ok(if passkeys { allow_passkey_script(page, &state.settings.issuer) } else { page })
}

pub async fn show(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = browser::query_params(query.as_deref())?;
    let request = params.get("request");
    let pending = match request {
        Some(handle) => Some(authorization::pending_login(&state.authorization(&meta), handle).await?),
        None => None,
    };
    let (client_name, hint) = pending.map_or((None, None), |p| (p.client_name, p.login_hint));
    let form = LoginForm { request, client_name, username: hint.as_deref().unwrap_or(""), error: None };
    login_page(&state, &session, StatusCode::OK, form).await
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    headers: HeaderMap,
    PostedForm(params): PostedForm,
) -> Result<Response, PageError> {
    if !state.settings.password_login {
        return Err(PageError::forbidden("Signing in with a password is turned off here."));
    }
    let request = params.get("request");
    if request.is_some_and(|h| !authorization::valid_handle(h)) {
        return Err(PageError::expired_request());
    }
    let username = params.get("username").unwrap_or("").trim();
    let password = params.get("password").unwrap_or("");
    let again = |error| LoginForm { request, client_name: None, username, error: Some(error) };
    if !session.csrf_ok(params.get("csrf_token")).await? {
        let form = again("This form expired. Please sign in again.");
        return login_page(&state, &session, StatusCode::FORBIDDEN, form).await;
    }
    if username.is_empty()
        || username.len() > 64
        || password.is_empty()
        || password.len() > crate::signin::password::MAX_LEN * 4
    {
        let form = again("Enter your username and password.");
        return login_page(&state, &session, StatusCode::BAD_REQUEST, form).await;
    }
    let limits = state.login_limits();
    let (user, second_factor) =
        match authentication::sign_in(&state.pool, &state.audit, &meta, limits, username, password).await? {
            SignIn::Success { user, second_factor } => (user, second_factor),
            SignIn::Refused => {
                return login_page(&state, &session, StatusCode::UNAUTHORIZED, again(BAD_CREDENTIALS)).await;
            }
            SignIn::Throttled { retry_after_secs: secs } => {
                let message = format!("Too many failed sign-in attempts. Try again in {secs} seconds.");
                let page = login_page(&state, &session, StatusCode::TOO_MANY_REQUESTS, again(&message)).await?;
                return Ok(retry_after(page, secs));
            }
        };
    let journey = browser::journey(&state, &session, &meta, &headers);
    let step = journey.first_factor(&user, FirstFactor::Password { second_factor }, request).await?;
    Ok(go(&state.settings.issuer, step))
}
