//! `GET/POST /consent`: the person sees who asks for what (`authorization::consent_view`), and
//! allows or denies (`authorization::decide`). The decision uses up the authorization request,
//! which is bound to this browser and this user.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::browser::see_other;
use super::extract::{ApplicationForm, CheckedForm, SignedIn};
use super::pages::{ConsentPage, PageError, render};
use crate::grant::authorization::{self, Decision};
use crate::oauth::params::Params;
use crate::platform::audit::RequestMeta;
use crate::signin::session::BrowserSession;
use crate::state::AppState;

/// Only the browser that started a request may see or answer its consent page.
async fn check_owned(session: &BrowserSession, handle: &str) -> Result<(), PageError> {
    if session.owns_request(handle).await? { Ok(()) } else { Err(PageError::expired_request()) }
}

pub async fn show(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    user: Option<SignedIn>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = Params::parse(query.as_deref().unwrap_or("").as_bytes()).unwrap_or_default();
    let Some(handle) = params.get("request").filter(|h| authorization::valid_handle(h)) else {
        return Err(PageError::expired_request());
    };
    let Some(SignedIn(user)) = user else {
        return Ok(see_other(&format!("{}?request={handle}", state.settings.issuer.join("/login"))));
    };
    check_owned(&session, handle).await?;
    let view = authorization::consent_view(&state.authorization(&meta), handle, user.id).await?;
    let csrf = session.csrf_token().await?;
    Ok(render(
        StatusCode::OK,
        &ConsentPage {
            base: state.settings.issuer.path(),
            csrf_token: &csrf,
            request: handle,
            client_name: &view.client.client_name,
            unverified: view.client.is_self_registered(),
            metadata_document_host: view.metadata_document_host,
            localhost_only: view.localhost_only,
            username: &user.username,
            redirect_host: view.redirect_host,
            resource_name: &view.resource.name,
            resource_uri: &view.resource.uri,
            scopes: view.scopes,
        },
    ))
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    SignedIn(user): SignedIn,
    CheckedForm(params, _): CheckedForm<ApplicationForm>,
) -> Result<Response, PageError> {
    let Some(handle) = params.get("request").filter(|h| authorization::valid_handle(h)) else {
        return Err(PageError::expired_request());
    };
    let decision = match params.get("decision") {
        // The page's checkboxes (`scope:NAME`, marked by `choices`); a form without them allows
        // every scope asked for.
        Some("allow") if params.get("choices") == Some("1") => {
            Decision::Allow(Some(params.names_after("scope:").map(str::to_owned).collect()))
        }
        Some("allow") => Decision::Allow(None),
        Some("deny") => Decision::Deny,
        _ => return Err(PageError::bad_request("Choose Allow or Deny.")),
    };
    check_owned(&session, handle).await?;
    let location = authorization::decide(&state.authorization(&meta), handle, user.id, decision).await?;
    Ok(see_other(&location))
}
