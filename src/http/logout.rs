//! `GET/POST /logout`: the end-session endpoint (OpenID Connect RP-Initiated Logout 1.0), and
//! the sign-out form. `logout::check` validates; the person confirms unless the request carries
//! their ID token; then the browser session ends and the browser goes back to the application
//! (its registered `post_logout_redirect_uri`, with `state`) or sees that it is signed out.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::browser::{self, see_other};
use super::extract::{CheckedForm, LogoutForm, SignedIn};
use super::pages::{InfoPage, LogoutPage, PageError, render};
use crate::openid::logout::{self, Logout, LogoutError};
use crate::platform::audit::RequestMeta;
use crate::signin::authentication::SessionUser;
use crate::signin::session::BrowserSession;
use crate::state::AppState;

/// The parameters a confirmation carries to the POST.
const CARRIED: [&str; 4] = ["id_token_hint", "client_id", "post_logout_redirect_uri", "state"];

impl From<LogoutError> for PageError {
    fn from(e: LogoutError) -> Self {
        match e {
            LogoutError::Invalid(message) => PageError::bad_request(message),
            LogoutError::Client(e) => e.into(),
        }
    }
}

pub async fn show(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    user: Option<SignedIn>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let user = user.map(|SignedIn(user)| user);
    let params = browser::query_params(query.as_deref())?;
    if let Some(name) = params.first_repeated() {
        return Err(PageError::bad_request(format!("The parameter {name} appears more than once.")));
    }
    let request = logout::check(&state.clients, &state.keys, &state.settings.issuer, &params).await?;
    if logout::needs_confirmation(&request, user.as_ref()) {
        let (Some(user), csrf) = (user, session.csrf_token().await?) else {
            return Err(PageError::internal("confirmation without a user"));
        };
        let carried = CARRIED.iter().filter_map(|name| Some((*name, params.get(name)?))).collect();
        let page = LogoutPage {
            base: state.settings.issuer.path(),
            csrf_token: &csrf,
            client_name: request.client.as_ref().map(|c| c.client_name.as_str()),
            username: &user.username,
            carried,
        };
        return Ok(render(StatusCode::OK, &page));
    }
    end(&state, &meta, &session, user, &request).await
}

/// The sign-out form (ours, or the confirmation of an application's request).
pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    user: Option<SignedIn>,
    CheckedForm(params, _): CheckedForm<LogoutForm>,
) -> Result<Response, PageError> {
    let request = logout::check(&state.clients, &state.keys, &state.settings.issuer, &params).await?;
    end(&state, &meta, &session, user.map(|SignedIn(user)| user), &request).await
}

async fn end(
    state: &AppState,
    meta: &RequestMeta,
    session: &BrowserSession,
    user: Option<SessionUser>,
    request: &Logout,
) -> Result<Response, PageError> {
    session.log_out().await?;
    logout::record(&state.audit, meta, request, user.as_ref()).await;
    if let Some(location) = &request.redirect {
        return Ok(see_other(location));
    }
    let page = InfoPage { base: state.settings.issuer.path(), title: "Signed out", message: "You are signed out." };
    Ok(render(StatusCode::OK, &page))
}
