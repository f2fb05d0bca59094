//! `GET/POST /login`: the form, then `authentication::sign_in` (one message
//! for an unknown user and a wrong password, and the same cost), then back to the pending
//! authorization request through `authorization::signed_in_for`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use tower_sessions::Session;

use super::browser::{self, HalfSignedIn, SessionUser, see_other};
use super::pages::{LoginPage, PageError, allow_passkey_script, render};
use crate::config::MfaPolicy;
use crate::grant::authorization;
use crate::oauth::secret;
use crate::platform::audit::RequestMeta;
use crate::signin::authentication::{self, SignIn};
use crate::state::AppState;
use crate::store::login_throttle::Limits;

const BAD_CREDENTIALS: &str = "Incorrect username or password.";

/// The login throttle's limits, for every check of something a person knows.
pub fn limits(state: &AppState) -> Limits {
    Limits { per_account: state.settings.login_max_failures, per_source: state.settings.login_source_max_failures }
}

struct LoginForm<'a> {
    request: Option<&'a str>,
    client_name: Option<String>,
    username: &'a str,
    error: Option<&'a str>,
}

async fn login_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    form: LoginForm<'_>,
) -> Result<Response, PageError> {
    let csrf = browser::csrf_token(session).await?;
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
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = browser::query_params(query.as_deref())?;
    let request = params.get("request");
    let pending = match request {
        Some(handle) => {
            let resources = state.resources.load();
            Some(authorization::pending_login(&state.authorization(&meta, &resources), handle).await?)
        }
        None => None,
    };
    let (client_name, hint) = pending.map_or((None, None), |p| (p.client_name, p.login_hint));
    let form = LoginForm { request, client_name, username: hint.as_deref().unwrap_or(""), error: None };
    login_page(&state, &session, StatusCode::OK, form).await
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    if !state.settings.password_login {
        return Err(PageError::forbidden("Signing in with a password is turned off here."));
    }
    let params = browser::posted_form(&state.settings.issuer, &headers, &body)?;
    let request = params.get("request");
    if request.is_some_and(|h| !authorization::valid_handle(h)) {
        return Err(PageError::expired_request());
    }
    let username = params.get("username").unwrap_or("").trim();
    let password = params.get("password").unwrap_or("");
    let again = |error| LoginForm { request, client_name: None, username, error: Some(error) };
    if !browser::csrf_ok(&session, params.get("csrf_token")).await? {
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
    let (user, second_factor) =
        match authentication::sign_in(&state.pool, &state.audit, &meta, limits(&state), username, password).await? {
            SignIn::Success { user, second_factor } => (user, second_factor),
            SignIn::Refused => {
                return login_page(&state, &session, StatusCode::UNAUTHORIZED, again(BAD_CREDENTIALS)).await;
            }
            SignIn::Throttled { retry_after_secs: secs } => {
                let message = format!("Too many failed sign-in attempts. Try again in {secs} seconds.");
                let mut res = login_page(&state, &session, StatusCode::TOO_MANY_REQUESTS, again(&message)).await?;
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return Ok(res);
            }
        };
    let mfa = state.settings.mfa;
    if mfa != MfaPolicy::Off && second_factor {
        let half =
            HalfSignedIn { user_id: user.id, request: request.map(str::to_owned), at: chrono::Utc::now().timestamp() };
        browser::start_second_factor(&session, &half).await?;
        return Ok(see_other(&state.settings.issuer.join("/login/second-factor")));
    }
    if mfa == MfaPolicy::Required {
        // Everyone needs a second factor here: this session may only set one up.
        let setup_only = SessionUser { setup_only: true, ..SessionUser::signed_in_now(&user) }
            .from_device(&meta, browser::user_agent(&headers));
        browser::log_in(&session, setup_only).await?;
        return Ok(see_other(&format!("{}?done=mfa-required", state.settings.issuer.join("/account"))));
    }
    finish(&state, &meta, &session, &headers, &user, request).await
}

/// Sign the browser in as `user` (the password, and the second factor when there is one, given)
/// and go on: to the pending authorization request, or to the account page.
pub async fn finish(
    state: &AppState,
    meta: &RequestMeta,
    session: &Session,
    headers: &HeaderMap,
    user: &crate::store::users::User,
    request: Option<&str>,
) -> Result<Response, PageError> {
    let signed_in = SessionUser::signed_in_now(user).from_device(meta, browser::user_agent(headers));
    browser::log_in(session, signed_in.clone()).await?;
    // Signed in for no application: the person's own page.
    let Some(handle) = request else { return Ok(see_other(&state.settings.issuer.join("/account"))) };
    if !browser::owns_request(session, &hex::encode(secret::digest(handle))).await? {
        return Err(PageError::expired_request());
    }
    let resources = state.resources.load();
    let location = authorization::signed_in_for(&state.authorization(meta, &resources), handle, &signed_in).await?;
    Ok(see_other(&location))
}
