//! `POST /token` (RFC 6749 §3.2): parse strictly, authenticate the client, dispatch on
//! `grant_type`, answer with `Cache-Control: no-store`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::browser::{self, FormError};
use crate::clients::Client;
use crate::grant::{self, Issued};
use crate::oauth::client_auth::Presented;
use crate::oauth::params::Params;
use crate::oauth::{ErrorCode, OAuthError, scope};
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::platform::rate_limit::Route;
use crate::state::AppState;
use crate::web::error::ApiError;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
}

pub async fn token(State(state): State<AppState>, meta: RequestMeta, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &meta, &headers, &body).await {
        Ok((grant_type, client, issued)) => {
            let claims = &issued.access.claims;
            crate::platform::metrics::token_issued(grant_type);
            state
                .audit
                .record(
                    Event::new("token.issued", Outcome::Success)
                        .during(&meta)
                        .client(&client.client_id)
                        .subject(&claims.sub)
                        .resource(&claims.aud)
                        .scopes(&claims.scope)
                        .detail(grant_type),
                )
                .await;
            state.clients.used(&client);
            let body = TokenResponse {
                access_token: &issued.access.token,
                token_type: "Bearer",
                expires_in: issued.access.expires_in,
                scope: scope::join(&issued.scopes),
                refresh_token: issued.refresh.as_ref().map(|r| r.expose()),
                id_token: issued.id_token.as_deref(),
            };
            let mut res = Json(body).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err((client_id, e)) => {
            if e.status != StatusCode::TOO_MANY_REQUESTS {
                let outcome = if e.status.is_server_error() { Outcome::Error } else { Outcome::Denied };
                let mut event = Event::new("token.denied", outcome).during(&meta).detail(e.code);
                if let Some(id) = client_id {
                    event = event.client(id);
                }
                state.audit.record(event).await;
            }
            e.into_response()
        }
    }
}

/// Parse a form body as the token, revocation and introspection endpoints need it.
pub fn parse_form(headers: &HeaderMap, body: &Bytes) -> Result<Params, ApiError> {
    browser::form(headers, body).map_err(|e| {
        let message = e.to_string();
        match e {
            FormError::ContentType | FormError::Params(_) | FormError::Repeated(_) => {
                OAuthError::invalid_request(message).into()
            }
        }
    })
}

/// Authenticate the client a request presents (RFC 6749 §2.3), within its per-client rate
/// limit. An unknown client is `invalid_client`, so a client deleted meanwhile knows to register
/// again.
pub async fn authenticate_client(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    params: &Params,
    route: Route,
) -> Result<std::sync::Arc<Client>, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let presented = Presented::from_request(authorization, params)?;
    client_limit(state, meta, route, presented.client_id()).await?;
    let client =
        state.clients.find(presented.client_id()).await?.ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    presented.verify(client.secret_hash.as_deref())?;
    Ok(client)
}

/// The per-client rate limit, counted before the credentials are checked (so guessing one
/// client's secret is limited too).
pub async fn client_limit(state: &AppState, meta: &RequestMeta, route: Route, client_id: &str) -> Result<(), ApiError> {
    match state.limits.check_client(route, client_id) {
        Ok(()) => Ok(()),
        Err(wait) => {
            crate::platform::metrics::rate_limited(route.name());
            let event =
                Event::new("rate_limit.hit", Outcome::RateLimited).during(meta).client(client_id).detail(route.name());
            state.audit.record(event).await;
            Err(ApiError::too_many_requests(wait))
        }
    }
}

type Granted = (&'static str, std::sync::Arc<Client>, Issued);

async fn handle(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Granted, (Option<String>, ApiError)> {
    let params = parse_form(headers, body).map_err(|e| (None, e))?;
    let grant_type = match params.get("grant_type") {
        Some("authorization_code") => "authorization_code",
        Some("refresh_token") => "refresh_token",
        Some("client_credentials") => "client_credentials",
        Some(other) => {
            let e = OAuthError::new(ErrorCode::UnsupportedGrantType, format!("grant_type {other} is not supported"));
            return Err((params.get("client_id").map(str::to_owned), e.into()));
        }
        None => return Err((None, OAuthError::invalid_request("grant_type is required").into())),
    };
    let presented_id = params.get("client_id").map(str::to_owned);
    let client =
        authenticate_client(state, meta, headers, &params, Route::Token).await.map_err(|e| (presented_id, e))?;
    let fail = |e: ApiError| (Some(client.client_id.clone()), e);
    if !client.has_grant(grant_type) {
        let e = OAuthError::new(ErrorCode::UnauthorizedClient, format!("this client may not use {grant_type}"));
        return Err(fail(e.into()));
    }
    let resources = state.resources.load();
    let cx = state.grants(meta, &resources);
    let issued = match grant_type {
        "authorization_code" => grant::authorization_code::exchange(&cx, &client, &params).await,
        "refresh_token" => grant::refresh_token::exchange(&cx, &client, &params).await,
        _ => grant::client_credentials::exchange(&cx, &client, &params).await,
    }
    .map_err(|e| fail(e.into()))?;
    Ok((grant_type, client, issued))
}
