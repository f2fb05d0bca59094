//! `GET/POST /logout`: the end-session endpoint (OpenID Connect RP-Initiated Logout 1.0), and
//! the sign-out form. `logout::check` validates; the person confirms unless the request carries
//! their ID token; then the browser session ends and the browser goes back to the application
//! (its registered `post_logout_redirect_uri`, with `state`) or sees that it is signed out.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tower_sessions::Session;

use super::browser::{self, see_other};
use super::pages::{InfoPage, LogoutPage, PageError, render};
use crate::openid::logout::{self, Logout, LogoutError};
use crate::platform::audit::RequestMeta;
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
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = browser::query_params(query.as_deref())?;
    if let Some(name) = params.first_repeated() {
        return Err(PageError::bad_request(format!("The parameter {name} appears more than once.")));
    }
    let request = logout::check(&state.clients, &state.keys, &state.settings.issuer, &params).await?;
    let user = browser::signed_in(&state.pool, &session).await?;
    if logout::needs_confirmation(&request, user.as_ref()) {
        let (Some(user), csrf) = (user, browser::csrf_token(&session).await?) else {
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
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let expired = "This form expired. Go back to the application and sign out again.";
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, expired).await?;
    let request = logout::check(&state.clients, &state.keys, &state.settings.issuer, &params).await?;
    let user = browser::signed_in(&state.pool, &session).await?;
    end(&state, &meta, &session, user, &request).await
}

async fn end(
    state: &AppState,
    meta: &RequestMeta,
    session: &Session,
    user: Option<browser::SessionUser>,
    request: &Logout,
) -> Result<Response, PageError> {
    browser::log_out(session).await?;
    logout::record(&state.audit, meta, request, user.as_ref()).await;
    if let Some(location) = &request.redirect {
        return Ok(see_other(location));
    }
    let page = InfoPage { base: state.settings.issuer.path(), title: "Signed out", message: "You are signed out." };
    Ok(render(StatusCode::OK, &page))
}
