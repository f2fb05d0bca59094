//! `POST /token` (RFC 6749 §3.2): parse strictly, authenticate the client, dispatch on
//! `grant_type`, answer with `Cache-Control: no-store`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::browser::{self, FormError};
use crate::clients::{self, Client};
use crate::error::ApiError;
use crate::grant::{self, Issued};
use crate::oauth::client_auth::Presented;
use crate::oauth::params::Params;
use crate::oauth::{ErrorCode, OAuthError, scope};
use crate::state::AppState;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(issued) => {
            let body = TokenResponse {
                access_token: &issued.access.token,
                token_type: "Bearer",
                expires_in: issued.access.expires_in,
                scope: scope::join(&issued.scopes),
                refresh_token: issued.refresh.as_ref().map(|r| r.expose()),
            };
            let mut res = Json(body).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => e.into_response(),
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

/// Authenticate the client a request presents (RFC 6749 §2.3). An unknown client is
/// `invalid_client`, so a client deleted meanwhile knows to register again.
pub async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<std::sync::Arc<Client>, ApiError> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or(""));
    let presented = Presented::from_request(authorization, params)?;
    let client = clients::find(state, presented.client_id())
        .await?
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    presented.verify(client.secret_hash.as_deref())?;
    Ok(client)
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<Issued, ApiError> {
    let params = parse_form(headers, body)?;
    let grant_type = params.get("grant_type").ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
    if !matches!(grant_type, "authorization_code" | "refresh_token" | "client_credentials") {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {grant_type} is not supported"),
        )
        .into());
    }
    let client = authenticate_client(state, headers, &params).await?;
    if !client.has_grant(grant_type) {
        return Err(
            OAuthError::new(ErrorCode::UnauthorizedClient, format!("this client may not use {grant_type}")).into()
        );
    }
    let issued = match grant_type {
        "authorization_code" => grant::authorization_code::exchange(state, &client, &params).await?,
        "refresh_token" => grant::refresh_token::exchange(state, &client, &params).await?,
        _ => grant::client_credentials::exchange(state, &client, &params).await?,
    };
    tracing::info!(client_id = %client.client_id, grant_type, jti = %issued.access.claims.jti, "token issued");
    state.client_used(&client);
    Ok(issued)
}
