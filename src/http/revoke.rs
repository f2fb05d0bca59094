//! `POST /revoke` (RFC 7009). A refresh token revokes its whole grant; an access token goes on
//! the deny list until it expires. Tokens of other clients are left alone, and the answer is the
//! same `200` whether or not the token existed. A database failure is `503`, never a false `200`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::token::{authenticate_client, parse_form};
use crate::clients::Client;
use crate::error::ApiError;
use crate::oauth::{OAuthError, secret};
use crate::state::AppState;
use crate::store::{grants, revocation};
use crate::tokens;

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = parse_form(&headers, &body)?;
        let client = authenticate_client(&state, &headers, &params).await?;
        let token = params.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        revoke_token(&state, &client, token).await.map_err(ApiError::unavailable)?;
        let mut res = StatusCode::OK.into_response();
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok::<_, ApiError>(res)
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn revoke_token(state: &AppState, client: &Client, token: &str) -> Result<(), sqlx::Error> {
    if token.bytes().filter(|b| *b == b'.').count() == 2 {
        // An expired token needs no revoking; one of another client is not ours to revoke.
        if let Ok(claims) = tokens::verify(state, token, false)
            && claims.client_id == client.client_id
        {
            let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(chrono::Utc::now);
            revocation::revoke_jti(&state.pool, &claims.jti, expires_at).await?;
            tracing::info!(client_id = %client.client_id, jti = %claims.jti, "access token revoked");
        }
        return Ok(());
    }
    if token.len() > 256 {
        return Ok(());
    }
    if let Some(refresh) = grants::refresh_state(&state.pool, &secret::digest(token)).await?
        && refresh.client_id == client.client_id
    {
        grants::revoke(&state.pool, refresh.grant_id, "revoked_by_client").await?;
        tracing::info!(client_id = %client.client_id, grant_id = %refresh.grant_id, "refresh token revoked with its grant");
    }
    Ok(())
}
