//! `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2).
//!
//! The code is claimed atomically for the authenticated client; whatever goes wrong after the
//! claim (redirect URI, verifier, resource) revokes its grant, since the code is spent. A code
//! presented a second time revokes everything issued from its first use.

use super::{Context, GrantError, Issued, id_token_for, may_refresh, required};
use crate::clients::Client;
use crate::oauth::params::Params;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{OAuthError, pkce, resource};
use crate::openid::SignIn;
use crate::platform::audit::{Event, Outcome};
use crate::store::grants::{self, ClaimedCode, FirstRefresh};
use crate::tokens::keys::KeyError;
use crate::tokens::{self, Grantee};

pub async fn exchange(cx: &Context<'_>, client: &Client, params: &Params) -> Result<Issued, GrantError> {
    let code = required(params, "code")?;
    let verifier = required(params, "code_verifier")?;
    let code_hash = secret::digest(code);

    // The first refresh token is stored with the claim, in the same statement.
    let refresh = may_refresh(client).then(Secret::generate);
    let refresh_hash = refresh.as_ref().map(Secret::digest);
    let first = refresh_hash.as_ref().map(|hash| FirstRefresh {
        token_hash: hash.as_slice(),
        idle_ttl_seconds: cx.refresh.idle.as_secs_f64(),
        absolute_ttl_seconds: cx.refresh.max.as_secs_f64(),
    });
    let Some(claimed) = grants::claim_code(cx.pool, &code_hash, &client.client_id, first.as_ref()).await? else {
        return Err(explain_unclaimable(cx, &code_hash, client).await);
    };
    if let Err(error) = check_claimed(cx, &claimed, verifier, params) {
        cx.revocation.revoke_grant(claimed.grant_id, "failed_code_exchange").await?;
        return Err(error.into());
    }
    let Some(resource) = cx.resources.by_id(claimed.resource_id).cloned() else {
        cx.revocation.revoke_grant(claimed.grant_id, "failed_code_exchange").await?;
        return Err(OAuthError::invalid_grant("the resource of this grant no longer exists").into());
    };
    let Some(user_id) = claimed.user_id else {
        cx.revocation.revoke_grant(claimed.grant_id, "failed_code_exchange").await?;
        return Err(OAuthError::invalid_grant("the code has no user").into());
    };
    let sub = user_id.to_string();
    let to = Grantee {
        sub: &sub,
        client_id: &client.client_id,
        resource: &resource,
        scopes: &claimed.scopes,
        grant: Some(claimed.grant_id),
    };
    let access = tokens::mint(cx.keys, cx.issuer, to)?;
    let sign_in = SignIn { auth_time: claimed.auth_time, sid: claimed.sid.as_deref(), nonce: claimed.nonce.as_deref() };
    let id_token = id_token_for(cx, client, claimed.profile.as_ref(), &claimed.scopes, &access, sign_in)?;
    // RSA signing takes hundreds of microseconds: on a blocking thread.
    let id_token = match id_token {
        Some(unsigned) => {
            Some(tokio::task::spawn_blocking(move || unsigned.sign()).await.map_err(|_| KeyError::Generation)??)
        }
        None => None,
    };
    Ok(Issued { access, refresh, scopes: claimed.scopes, id_token })
}

/// What the token request must repeat of the authorization request: the redirect URI, the
/// PKCE verifier, and the resource if it names one.
fn check_claimed(cx: &Context<'_>, claimed: &ClaimedCode, verifier: &str, params: &Params) -> Result<(), OAuthError> {
    let redirect_ok = match params.get("redirect_uri") {
        Some(presented) => presented == claimed.redirect_uri,
        None => !claimed.redirect_uri_sent,
    };
    if !redirect_ok {
        return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
    }
    if !pkce::verify(verifier, &claimed.code_challenge) {
        return Err(OAuthError::invalid_grant("code_verifier does not match the code_challenge"));
    }
    if let (Some(requested), Some(granted)) = (params.get("resource"), cx.resources.by_id(claimed.resource_id))
        && resource::canonicalize(requested).as_deref() != Ok(granted.uri.as_str())
    {
        return Err(OAuthError::invalid_target("resource differs from the one authorized"));
    }
    Ok(())
}

/// The code could not be claimed: say why, and revoke the grant if this is a replay.
async fn explain_unclaimable(cx: &Context<'_>, code_hash: &[u8], client: &Client) -> GrantError {
    match grants::code_state(cx.pool, code_hash).await {
        Ok(Some(code)) if code.client_id != client.client_id => {
            OAuthError::invalid_grant("the code was issued to another client").into()
        }
        Ok(Some(code)) if code.used => {
            let event = Event::new("code.replay_detected", Outcome::Denied)
                .during(cx.meta)
                .client(&client.client_id)
                .digest(code_hash)
                .detail(format!("grant {} revoked", code.grant_id));
            cx.audit.record(event).await;
            if let Err(e) = cx.revocation.revoke_grant(code.grant_id, "code_replay").await {
                return e.into();
            }
            OAuthError::invalid_grant("the code was already used; everything issued from it is revoked").into()
        }
        Ok(_) => OAuthError::invalid_grant("the code is invalid, expired or revoked").into(),
        Err(e) => e.into(),
    }
}
