//! `POST /introspect` (RFC 7662): resource servers (and confidential clients) ask whether a
//! token is active. An access token is active only for the resource it was minted for; anything
//! else — another audience, expired, revoked, malformed, unknown — is exactly `{"active": false}`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::client_auth::{Caller, IntrospectionRequest};
use crate::oauth::{OAuthError, scope, secret};
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::state::AppState;
use crate::store::grants;
use crate::web::error::ApiError;
use crate::web::headers::no_store;

pub async fn introspect(
    State(state): State<AppState>,
    meta: RequestMeta,
    request: Result<IntrospectionRequest, ApiError>,
) -> Response {
    let result = async {
        let IntrospectionRequest { caller, params } = request?;
        let token = params.get("token").ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        // A database failure is a 503, never a guess either way.
        let answer = inspect(&state, &caller, token).await.map_err(ApiError::unavailable)?;
        let mut event = Event::new("introspection", Outcome::Success).during(&meta).digest_of(token);
        event = match &caller {
            Caller::Resource(r) => event.resource(&r.uri),
            Caller::Client(c) => event.client(&c.client_id),
        };
        event = match &answer {
            Some(a) => {
                let client = a["client_id"].as_str().unwrap_or_default().to_owned();
                let subject = a["sub"].as_str().unwrap_or_default().to_owned();
                event.detail("active").client(client).subject(subject)
            }
            None => event.detail("inactive"),
        };
        state.audit.record(event).await;
        Ok::<_, ApiError>(no_store(Json(answer.unwrap_or_else(|| json!({"active": false})))))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The introspection answer for an active token, `None` for an inactive one.
async fn inspect(state: &AppState, caller: &Caller, token: &str) -> Result<Option<Value>, sqlx::Error> {
    if token.bytes().filter(|b| *b == b'.').count() == 2 {
        let Caller::Resource(resource) = caller else { return Ok(None) };
        let Ok(claims) = state.verified.verify(&state.keys, &state.settings.issuer, token) else { return Ok(None) };
        if claims.aud != resource.uri || !state.revocation.is_active(&claims).await? {
            return Ok(None);
        }
        return Ok(Some(json!({
            "active": true,
            "iss": claims.iss,
            "sub": claims.sub,
            "aud": claims.aud,
            "client_id": claims.client_id,
            "scope": claims.scope,
            "iat": claims.iat,
            "exp": claims.exp,
            "jti": claims.jti,
            "token_type": "Bearer",
        })));
    }
    // A refresh token: only its own client may ask.
    let Caller::Client(client) = caller else { return Ok(None) };
    if token.len() > 256 {
        return Ok(None);
    }
    let Some(refresh) = grants::refresh_state(&state.pool, &secret::digest(token)).await? else { return Ok(None) };
    if refresh.client_id != client.client_id || refresh.rotated || refresh.expired || refresh.grant_revoked {
        return Ok(None);
    }
    let aud = state.resources.load().by_id(refresh.resource_id).map(|r| r.uri.clone());
    Ok(Some(json!({
        "active": true,
        "iss": state.settings.issuer.as_str(),
        "sub": refresh.user_id.map_or_else(|| refresh.client_id.clone(), |u| u.to_string()),
        "aud": aud,
        "client_id": refresh.client_id,
        "scope": scope::join(&refresh.scopes),
        "iat": refresh.created_at.timestamp(),
        "exp": refresh.expires_at.timestamp(),
        "token_type": "refresh_token",
    })))
}
