//! `POST /revoke` (RFC 7009). A refresh token revokes its whole grant; an access token goes on
//! the deny list until it expires. Tokens of other clients are left alone, and the answer is the
//! same `200` whether or not the token existed. A database failure is `503`, never a false `200`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::client_auth::RevocationRequest;
use crate::clients::Client;
use crate::oauth::{OAuthError, secret};
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::state::AppState;
use crate::tokens;
use crate::web::error::ApiError;
use crate::web::headers::no_store;

pub async fn revoke(
    State(state): State<AppState>,
    meta: RequestMeta,
    request: Result<RevocationRequest, ApiError>,
) -> Response {
    let result = async {
        let RevocationRequest { client, params } = request?;
        let token = params.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let revoked = revoke_token(&state, &client, token).await.map_err(ApiError::unavailable)?;
        // Recorded whether or not anything was revoked: the digest says which token was presented.
        let event = Event::new("token.revoked", Outcome::Success)
            .during(&meta)
            .client(&client.client_id)
            .digest_of(token)
            .detail(revoked.unwrap_or("nothing revoked"));
        state.audit.record(event).await;
        Ok::<_, ApiError>(no_store(StatusCode::OK))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// What was revoked, if anything.
async fn revoke_token(state: &AppState, client: &Client, token: &str) -> Result<Option<&'static str>, sqlx::Error> {
    if token.bytes().filter(|b| *b == b'.').count() == 2 {
        // An expired token needs no revoking; one of another client is not ours to revoke.
        if let Ok(claims) = tokens::verify(&state.keys, &state.settings.issuer, token, false)
            && claims.client_id == client.client_id
        {
            state.revocation.revoke_access_token(&claims.jti, claims.exp).await?;
            return Ok(Some("access token"));
        }
        return Ok(None);
    }
    if token.len() > 256 {
        return Ok(None);
    }
    let hash = secret::digest(token);
    let revoked = state.revocation.revoke_by_refresh_token(&hash, &client.client_id, "revoked_by_client").await?;
    Ok(revoked.map(|_| "refresh token and its grant"))
}
