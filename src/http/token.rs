//! `POST /token` (RFC 6749 §3.2): parse strictly, authenticate the client, dispatch on
//! `grant_type`, answer with `Cache-Control: no-store`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::client_auth::{TokenRefusal, TokenRequest};
use crate::grant::{self, GrantError, Issued};
use crate::oauth::scope;
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::state::AppState;
use crate::web::error::ApiError;
use crate::web::headers::no_store;

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

pub async fn token(
    State(state): State<AppState>,
    meta: RequestMeta,
    request: Result<TokenRequest, TokenRefusal>,
) -> Response {
    let result = match request {
        Ok(request) => match grant(&state, &meta, &request).await {
            Ok(issued) => Ok((request, issued)),
            Err(error) => Err(TokenRefusal { client_id: Some(request.client.client_id.clone()), error }),
        },
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok((TokenRequest { grant_type, client, .. }, issued)) => {
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
            no_store(Json(body))
        }
        Err(TokenRefusal { client_id, error: e }) => {
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

/// Run the grant the request names.
async fn grant(state: &AppState, meta: &RequestMeta, request: &TokenRequest) -> Result<Issued, ApiError> {
    let resources = state.resources.load();
    let cx = state.grants(meta, &resources);
    let (client, params) = (&request.client, &request.params);
    let issued = match request.grant_type {
        "authorization_code" => grant::authorization_code::exchange(&cx, client, params).await,
        "refresh_token" => grant::refresh_token::exchange(&cx, client, params).await,
        _ => grant::client_credentials::exchange(&cx, client, params).await,
    };
    Ok(issued?)
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::OAuth(e) => e.into(),
            GrantError::Database(e) => e.into(),
            GrantError::Signing(e) => Self::internal(e),
        }
    }
}
