//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2).
//!
//! The code is claimed atomically for the authenticated client; whatever goes wrong after the
//! claim (redirect URI, verifier, resource) revokes its grant, since the code is spent. A code
//! presented a second time revokes everything issued from its first use.

use super::{Issued, may_refresh, required};
use crate::audit::{Event, Outcome};
use crate::clients::Client;
use crate::error::ApiError;
use crate::oauth::params::Params;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{OAuthError, pkce, resource};
use crate::security::client_addr::RequestMeta;
use crate::state::AppState;
use crate::store::grants;
use crate::tokens;

pub async fn exchange(
    state: &AppState,
    meta: &RequestMeta,
    client: &Client,
    params: &Params,
) -> Result<Issued, ApiError> {
    let code = required(params, "code")?;
    let verifier = required(params, "code_verifier")?;
    let code_hash = secret::digest(code);

    let Some(claimed) = grants::claim_code(&state.pool, &code_hash, &client.client_id).await? else {
        return Err(explain_unclaimable(state, meta, &code_hash, client).await);
    };
    let fail = |error: OAuthError| async move {
        state.revoke_grant(claimed.grant_id, "failed_code_exchange").await?;
        Err::<Issued, ApiError>(error.into())
    };

    let redirect_ok = match params.get("redirect_uri") {
        Some(presented) => presented == claimed.redirect_uri,
        None => !claimed.redirect_uri_sent,
    };
    if !redirect_ok {
        return fail(OAuthError::invalid_grant("redirect_uri does not match the authorization request")).await;
    }
    if !pkce::verify(verifier, &claimed.code_challenge) {
        return fail(OAuthError::invalid_grant("code_verifier does not match the code_challenge")).await;
    }
    let resources = state.resources.load();
    let Some(resource) = resources.by_id(claimed.resource_id).cloned() else {
        return fail(OAuthError::invalid_grant("the resource of this grant no longer exists")).await;
    };
    if let Some(requested) = params.get("resource") {
        let canonical =
            resource::canonicalize(requested).map_err(|m| OAuthError::invalid_target(format!("resource {m}")));
        if canonical.as_deref() != Ok(resource.uri.as_str()) {
            return fail(OAuthError::invalid_target("resource differs from the one authorized")).await;
        }
    }

    let Some(user_id) = claimed.user_id else {
        return fail(OAuthError::invalid_grant("the code has no user")).await;
    };
    let access = tokens::mint(
        state,
        &user_id.to_string(),
        &client.client_id,
        &resource,
        &claimed.scopes,
        Some(claimed.grant_id),
    )?;
    let refresh = if may_refresh(client) {
        let token = Secret::generate();
        grants::insert_refresh(
            &state.pool,
            &token.digest(),
            claimed.grant_id,
            &client.client_id,
            state.settings.refresh_idle_ttl.as_secs_f64(),
            state.settings.refresh_max_ttl.as_secs_f64(),
        )
        .await?;
        Some(token)
    } else {
        None
    };
    Ok(Issued { access, refresh, scopes: claimed.scopes })
}

/// The code could not be claimed: say why, and revoke the grant if this is a replay.
async fn explain_unclaimable(state: &AppState, meta: &RequestMeta, code_hash: &[u8], client: &Client) -> ApiError {
    match grants::code_state(&state.pool, code_hash).await {
        Ok(Some(code)) if code.client_id != client.client_id => {
            OAuthError::invalid_grant("the code was issued to another client").into()
        }
        Ok(Some(code)) if code.used => {
            let event = Event::new("code.replay_detected", Outcome::Denied)
                .during(meta)
                .client(&client.client_id)
                .digest(code_hash)
                .detail(format!("grant {} revoked", code.grant_id));
            state.audit.record(event).await;
            if let Err(e) = state.revoke_grant(code.grant_id, "code_replay").await {
                return e.into();
            }
            OAuthError::invalid_grant("the code was already used; everything issued from it is revoked").into()
        }
        Ok(_) => OAuthError::invalid_grant("the code is invalid, expired or revoked").into(),
        Err(e) => e.into(),
    }
}
