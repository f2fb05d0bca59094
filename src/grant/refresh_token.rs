//! `grant_type=refresh_token` (RFC 6749 §6, OAuth 2.1 §4.3): rotation on every use; an
//! already-rotated token revokes the whole grant (reuse detection); `scope` may narrow the
//! access token but never widen the grant; `resource` must be the grant's.

use super::{Context, GrantError, Issued, required};
use crate::audit::{Event, Outcome};
use crate::clients::Client;
use crate::oauth::params::Params;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{OAuthError, scope};
use crate::store::grants;
use crate::tokens::{self, Grantee};

pub async fn exchange(cx: &Context<'_>, client: &Client, params: &Params) -> Result<Issued, GrantError> {
    let presented = required(params, "refresh_token")?;
    let wanted = match params.get("scope") {
        Some(raw) => scope::parse(raw).map_err(OAuthError::invalid_scope)?,
        None => Vec::new(),
    };
    let wanted_resource = params.get("resource").map(|raw| cx.resources.named(raw).map(|r| r.id)).transpose()?;

    let old_hash = secret::digest(presented);
    let new = Secret::generate();
    let request = grants::RefreshRequest {
        old_hash: &old_hash,
        new_hash: &new.digest(),
        client_id: &client.client_id,
        wanted_scopes: &wanted,
        wanted_resource,
        idle_ttl_seconds: cx.refresh.idle.as_secs_f64(),
    };
    let Some(rotated) = grants::rotate_refresh(cx.pool, &request).await? else {
        return Err(explain_unrotatable(cx, &request).await);
    };
    let Some(resource) = cx.resources.by_id(rotated.resource_id).cloned() else {
        return Err(OAuthError::invalid_grant("the resource of this grant no longer exists").into());
    };
    let scopes = if wanted.is_empty() { rotated.scopes.clone() } else { wanted };
    let sub = rotated.user_id.map_or_else(|| client.client_id.clone(), |u| u.to_string());
    let to = Grantee {
        sub: &sub,
        client_id: &client.client_id,
        resource: &resource,
        scopes: &scopes,
        grant: Some(rotated.grant_id),
    };
    let access = tokens::mint(cx.keys, cx.issuer, to)?;
    let event = Event::new("refresh.rotated", Outcome::Success)
        .during(cx.meta)
        .client(&client.client_id)
        .subject(&sub)
        .resource(&resource.uri)
        .digest(&old_hash)
        .detail(format!("grant {}", rotated.grant_id));
    cx.audit.record(event).await;
    Ok(Issued { access, refresh: Some(new), scopes })
}

/// Nothing was rotated: say why, and revoke the grant on reuse of a rotated token.
async fn explain_unrotatable(cx: &Context<'_>, request: &grants::RefreshRequest<'_>) -> GrantError {
    let token = match grants::refresh_state(cx.pool, request.old_hash).await {
        Ok(Some(t)) => t,
        Ok(None) => return OAuthError::invalid_grant("the refresh token is invalid").into(),
        Err(e) => return e.into(),
    };
    if token.client_id != request.client_id {
        return OAuthError::invalid_grant("the refresh token was issued to another client").into();
    }
    if token.grant_revoked {
        return OAuthError::invalid_grant("the grant of this refresh token is revoked").into();
    }
    if token.rotated {
        crate::metrics::refresh_reuse_detected();
        let event = Event::new("refresh.reuse_detected", Outcome::Denied)
            .during(cx.meta)
            .client(request.client_id)
            .digest(request.old_hash)
            .detail(format!("grant {} revoked", token.grant_id));
        cx.audit.record(event).await;
        if let Err(e) = cx.revocation.revoke_grant(token.grant_id, "refresh_reuse").await {
            return e.into();
        }
        return OAuthError::invalid_grant("the refresh token was already used; the grant is revoked").into();
    }
    if token.expired {
        return OAuthError::invalid_grant("the refresh token has expired").into();
    }
    if request.wanted_resource.is_some_and(|id| id != token.resource_id) {
        return OAuthError::invalid_target("resource differs from the one this grant is for").into();
    }
    if !scope::is_subset(request.wanted_scopes, &token.scopes) {
        return OAuthError::invalid_scope("scope may only narrow what was granted").into();
    }
    OAuthError::invalid_grant("the refresh token is invalid").into()
}
