//! `grant_type=refresh_token` (RFC 6749 §6, OAuth 2.1 §4.3): rotation on every use; an
//! already-rotated token revokes the whole grant (reuse detection); `scope` may narrow the
//! access token but never widen the grant; `resource` must be the grant's.
//!
//! Real clients refresh from two processes at once, or retry a refresh whose answer was lost.
//! Within the reuse grace window, the token just rotated, presented again, gets the same
//! successor back (and a fresh access token for the same grant), so every racer ends on one
//! chain. The successor is never stored: it is derived from the token it replaces with a key
//! only this server holds ([`Successors`]). Outside the window, or once the successor itself was
//! used, reuse is theft and revokes the grant.

use std::time::Duration;

use aws_lc_rs::hmac;

use super::{Context, GrantError, Issued, id_token_for, required};
use crate::clients::Client;
use crate::config::MasterKey;
use crate::oauth::params::Params;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{OAuthError, scope};
use crate::openid::SignIn;
use crate::platform::audit::{Event, Outcome};
use crate::platform::batch::Batcher;
use crate::store::grants::{self, QueuedRefresh, RefreshRequest, Rotated};
use crate::tokens::{self, Grantee};

/// Derives each refresh token's successor, and holds the reuse grace window.
pub struct Successors {
    key: hmac::Key,
    grace: Duration,
}

impl Successors {
    /// The derivation key comes from the master key (so every instance derives alike); `grace`
    /// zero turns the window off.
    pub fn new(master: &MasterKey, grace: Duration) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, master.as_bytes());
        let derived = hmac::sign(&root, b"tessera: refresh-token successors, v1");
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), grace }
    }

    /// The successor of `presented`: 256 bits of HMAC-SHA256.
    fn of(&self, presented: &str) -> Secret {
        let tag = hmac::sign(&self.key, presented.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        Secret::from_bytes(&bytes)
    }
}

/// Rotations in flight at once per instance, each a batch of at most this many.
const BATCH_WORKERS: usize = 2;
const BATCH_MAX: usize = 64;

/// Rotates refresh tokens in batches (group commit, see [`crate::platform::batch`]): concurrent refreshes
/// share one statement and one commit, each answered only once it is durable.
pub struct Rotations {
    batcher: Batcher<QueuedRefresh, Result<Option<Rotated>, sqlx::Error>>,
    /// The rotation statement's own connections, one per worker (see
    /// [`grants::rotate_refresh_many`] for why they plan it afresh each time).
    pool: sqlx::PgPool,
}

impl Rotations {
    /// Rotations on `pool`'s database, over [`BATCH_WORKERS`] connections of their own.
    pub fn new(pool: &sqlx::PgPool) -> Self {
        let own = crate::store::custom_plans(pool, BATCH_WORKERS as u32);
        let pool = own.clone();
        let batcher = Batcher::start(BATCH_WORKERS, BATCH_MAX, move |requests: Vec<QueuedRefresh>| {
            let pool = pool.clone();
            async move {
                match grants::rotate_refresh_many(&pool, &requests).await {
                    Ok(rotated) => rotated.into_iter().map(Ok).collect(),
                    Err(e) if let Some(each) = crate::platform::batch::unreachable_for_each(&e, requests.len()) => {
                        each.into_iter().map(Err).collect()
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "batched rotation failed; rotating one by one");
                        let one_by_one = requests.iter().map(|r| rotate_alone(&pool, r));
                        futures_util::future::join_all(one_by_one).await
                    }
                }
            }
        });
        Self { batcher, pool: own }
    }

    async fn rotate(&self, request: &RefreshRequest<'_>) -> Result<Option<Rotated>, sqlx::Error> {
        let queued = QueuedRefresh {
            old_hash: request.old_hash.to_vec(),
            new_hash: request.new_hash.to_vec(),
            client_id: request.client_id.to_owned(),
            wanted_scopes: request.wanted_scopes.join(" "),
            wanted_resource: request.wanted_resource,
            idle_ttl_seconds: request.idle_ttl_seconds,
        };
        match self.batcher.submit(queued).await {
            Ok(answer) => answer,
            Err(queued) => rotate_alone(&self.pool, &queued).await,
        }
    }
}

/// One rotation in a statement of its own (no batch could take it, or its batch failed).
async fn rotate_alone(pool: &sqlx::PgPool, r: &QueuedRefresh) -> Result<Option<Rotated>, sqlx::Error> {
    Ok(grants::rotate_refresh_many(pool, std::slice::from_ref(r)).await?.pop().flatten())
}

pub async fn exchange(cx: &Context<'_>, client: &Client, params: &Params) -> Result<Issued, GrantError> {
    let presented = required(params, "refresh_token")?;
    let wanted = match params.get("scope") {
        Some(raw) => scope::parse(raw).map_err(OAuthError::invalid_scope)?,
        None => Vec::new(),
    };
    let wanted_resource = params.get("resource").map(|raw| cx.resources.named(raw).map(|r| r.id)).transpose()?;

    let old_hash = secret::digest(presented);
    let new = cx.successors.of(presented);
    let request = RefreshRequest {
        old_hash: &old_hash,
        new_hash: &new.digest(),
        client_id: &client.client_id,
        wanted_scopes: &wanted,
        wanted_resource,
        idle_ttl_seconds: cx.refresh.idle.as_secs_f64(),
    };
    let rotated = match cx.rotations.rotate(&request).await? {
        Some(rotated) => {
            audit(cx, "refresh.rotated", client, &old_hash, &rotated).await;
            rotated
        }
        None => match replay(cx, &request).await? {
            Some(rotated) => {
                audit(cx, "token.refresh_reused_within_grace", client, &old_hash, &rotated).await;
                rotated
            }
            None => return Err(explain_unrotatable(cx, &request).await),
        },
    };
    let Some(resource) = cx.resources.by_id(rotated.resource_id).cloned() else {
        return Err(OAuthError::invalid_grant("the resource of this grant no longer exists").into());
    };
    let scopes = if wanted.is_empty() { rotated.scopes.clone() } else { wanted };
    let sub = subject(&rotated, client);
    let to = Grantee {
        sub: &sub,
        client_id: &client.client_id,
        resource: &resource,
        scopes: &scopes,
        grant: Some(rotated.grant_id),
    };
    let access = tokens::mint(cx.keys, cx.issuer, to)?;
    // A refreshed ID token: same subject and sign-in, no nonce (OpenID Connect Core §12.2).
    let sign_in = SignIn { auth_time: rotated.auth_time, sid: rotated.sid.as_deref(), nonce: None };
    let id_token = id_token_for(cx, client, rotated.profile.as_ref(), &rotated.scopes, &access, sign_in)?
        .map(crate::openid::Unsigned::sign)
        .transpose()?;
    Ok(Issued { access, refresh: Some(new), scopes, id_token })
}

/// The token was rotated moments ago and its successor is still unused: the same successor
/// again (its digest checked against the one stored at the rotation).
async fn replay(cx: &Context<'_>, request: &RefreshRequest<'_>) -> Result<Option<Rotated>, GrantError> {
    if cx.successors.grace.is_zero() {
        return Ok(None);
    }
    let found = grants::replay_within_grace(cx.pool, request, cx.successors.grace.as_secs_f64()).await?;
    Ok(found.filter(|(_, successor_hash)| successor_hash.as_slice() == request.new_hash).map(|(rotated, _)| rotated))
}

fn subject(rotated: &Rotated, client: &Client) -> String {
    rotated.user_id.map_or_else(|| client.client_id.clone(), |u| u.to_string())
}

async fn audit(cx: &Context<'_>, event: &'static str, client: &Client, old_hash: &[u8], rotated: &Rotated) {
    let mut event = Event::new(event, Outcome::Success)
        .during(cx.meta)
        .client(&client.client_id)
        .subject(subject(rotated, client))
        .digest(old_hash)
        .detail(format!("grant {}", rotated.grant_id));
    if let Some(resource) = cx.resources.by_id(rotated.resource_id) {
        event = event.resource(&resource.uri);
    }
    cx.audit.record(event).await;
}

/// Nothing was rotated: say why, and revoke the grant on reuse of a rotated token.
async fn explain_unrotatable(cx: &Context<'_>, request: &RefreshRequest<'_>) -> GrantError {
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
        crate::platform::metrics::refresh_reuse_detected();
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
