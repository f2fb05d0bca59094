//! `GET/POST /consent`: the person sees who asks for what, and allows or denies. The decision
//! uses up the authorization request, which is bound to this browser and this user.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::authorize::{deny, expired_request, issue_code, registered_client, see_other, signed_in};
use super::browser;
use super::login::valid_handle;
use super::pages::{ConsentPage, PageError, render};
use crate::audit::{Event, Outcome};
use crate::oauth::params::Params;
use crate::oauth::scope::OFFLINE_ACCESS;
use crate::oauth::{ErrorCode, OAuthError, redirect_uri, scope, secret};
use crate::security::client_addr::RequestMeta;
use crate::state::AppState;
use crate::store::{authz_requests, grants};

const OFFLINE_DESCRIPTION: &str = "Keep access while you are away (it receives a refresh token)";

pub async fn show(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let base = state.settings.issuer.path();
    let params = Params::parse(query.as_deref().unwrap_or("").as_bytes()).unwrap_or_default();
    let Some(handle) = params.get("request").filter(|h| valid_handle(h)) else {
        return expired_request(base).into_response();
    };
    let user = match signed_in(&state, &session).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other(&format!("{}?request={handle}", state.settings.issuer.join("/login"))),
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    let digest = secret::digest(handle);
    if !browser::owns_request(&session, &hex::encode(digest)).await {
        return expired_request(base).into_response();
    }
    let request = match authz_requests::get(&state.pool, &digest).await {
        Ok(Some(r)) if r.user_id == Some(user.id) => r,
        Ok(_) => return expired_request(base).into_response(),
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    let client = match registered_client(&state, &request.client_id).await {
        Ok(c) => c,
        Err(page) => return page.into_response(),
    };
    let resources = state.resources.load();
    let Some(resource) = resources.by_id(request.resource_id) else {
        return expired_request(base).into_response();
    };
    let scopes = request
        .scopes
        .iter()
        .map(|s| {
            let description = if s == OFFLINE_ACCESS {
                OFFLINE_DESCRIPTION.to_owned()
            } else {
                resource.scopes.get(s).cloned().unwrap_or_default()
            };
            (s.clone(), description)
        })
        .collect();
    let csrf = match browser::csrf_token(&session).await {
        Ok(t) => t,
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    let metadata_document_host = (client.origin == "cimd").then(|| redirect_uri::display_host(&client.client_id));
    render(
        StatusCode::OK,
        &ConsentPage {
            base,
            csrf_token: &csrf,
            request: handle,
            client_name: &client.client_name,
            unverified: client.is_self_registered(),
            metadata_document_host,
            localhost_only: client.is_self_registered() && redirect_uri::all_loopback(&client.redirect_uris),
            username: &user.username,
            redirect_host: redirect_uri::display_host(&request.redirect_uri),
            resource_name: &resource.name,
            resource_uri: &resource.uri,
            scopes,
        },
    )
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = state.settings.issuer.path();
    let params = match browser::posted_form(&state.settings.issuer, &headers, &body) {
        Ok(p) => p,
        Err(page) => return page.into_response(),
    };
    if !browser::csrf_ok(&session, params.get("csrf_token")).await {
        return PageError::forbidden(base, "This form expired. Go back to the application and start again.")
            .into_response();
    }
    let Some(handle) = params.get("request").filter(|h| valid_handle(h)) else {
        return expired_request(base).into_response();
    };
    let allow = match params.get("decision") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return PageError::bad_request(base, "Choose Allow or Deny.").into_response(),
    };
    let user = match signed_in(&state, &session).await {
        Ok(Some(user)) => user,
        Ok(None) => return PageError::forbidden(base, "You are not signed in.").into_response(),
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    let digest = secret::digest(handle);
    if !browser::owns_request(&session, &hex::encode(digest)).await {
        return expired_request(base).into_response();
    }
    // The decision uses the request up: a second submission finds nothing.
    let request = match authz_requests::claim(&state.pool, &digest, user.id).await {
        Ok(Some(r)) => r,
        Ok(None) => return expired_request(base).into_response(),
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    if !allow {
        let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
        return deny(&state, &meta, &request, Some(user.id), error).await;
    }
    if let Err(e) =
        grants::remember_consent(&state.pool, user.id, &request.client_id, request.resource_id, &request.scopes).await
    {
        return PageError::internal(base, e).into_response();
    }
    let mut event = Event::new("consent.granted", Outcome::Success)
        .during(&meta)
        .client(&request.client_id)
        .subject(user.id.to_string())
        .scopes(scope::join(&request.scopes));
    if let Some(resource) = state.resources.load().by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    state.audit.record(event).await;
    issue_code(&state, &meta, &request, user.id).await
}
