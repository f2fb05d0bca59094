//! Passkeys (WebAuthn, with webauthn-rs): registered from the account page, then used as the
//! second factor after a password, or on their own to sign in (a discoverable credential names
//! its account: no username, no password). The relying party is the issuer's host and origin;
//! an issuer on an IP address cannot have passkeys (browsers refuse IP addresses as RP IDs).
//! Each ceremony's state stays on the server (in the browser session, which lives in the
//! database); user verification is required every time.

use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, DiscoverableKey, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Webauthn, WebauthnBuilder,
};

use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::store::passkeys::{self, StoredPasskey};
use crate::store::users::{self, User};

#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    #[error("passkeys need an issuer on a domain name (localhost included), not an IP address")]
    Unavailable,
    #[error("the passkey could not be verified: {0}")]
    Invalid(String),
    #[error("this passkey is not registered here")]
    Unknown,
    #[error("this passkey is registered already")]
    Duplicate,
    #[error("the account is disabled")]
    Disabled,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(e: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Invalid(e.to_string())
}

/// The relying party: built once from the issuer (`None` when the issuer cannot be one).
#[derive(Clone)]
pub struct Passkeys {
    webauthn: Option<Arc<Webauthn>>,
}

/// What the browser needs for a ceremony (`navigator.credentials` options, JSON) and what the
/// server keeps until the answer comes (the ceremony's state, JSON).
pub struct Ceremony {
    pub options: Value,
    pub state: Value,
}

/// A passkey as the account page lists it.
pub struct PasskeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, PasskeyError> {
    serde_json::to_value(value).map_err(invalid)
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, PasskeyError> {
    serde_json::from_value(value).map_err(invalid)
}

fn passkey_of(stored: &StoredPasskey) -> Result<Passkey, PasskeyError> {
    from_json(stored.credential.clone())
}

impl Passkeys {
    pub fn new(issuer: &str) -> Self {
        let webauthn = url::Url::parse(issuer).ok().and_then(|origin| {
            let host = origin.host()?;
            let url::Host::Domain(rp_id) = host else { return None };
            let rp_id = rp_id.to_owned();
            WebauthnBuilder::new(&rp_id, &origin).ok()?.rp_name("Tessera").build().ok()
        });
        Self { webauthn: webauthn.map(Arc::new) }
    }

    pub fn available(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn, PasskeyError> {
        self.webauthn.as_deref().ok_or(PasskeyError::Unavailable)
    }

    /// Start adding a passkey to `user`'s account (their others excluded, so one authenticator
    /// is not registered twice). The authenticator is asked for a discoverable credential, so
    /// the passkey can also sign in on its own.
    pub async fn registration(&self, pool: &PgPool, user: &User) -> Result<Ceremony, PasskeyError> {
        let existing = passkeys::for_user(pool, user.id).await?;
        let exclude = existing.iter().map(|s| passkey_of(s).map(|p| p.cred_id().clone())).collect::<Result<_, _>>()?;
        let display = user.name.as_deref().unwrap_or(&user.username);
        let (options, state) = self
            .webauthn()?
            .start_passkey_registration(user.id, &user.username, display, Some(exclude))
            .map_err(invalid)?;
        let mut options = to_json(&options)?;
        options["publicKey"]["authenticatorSelection"]["residentKey"] = Value::from("preferred");
        Ok(Ceremony { options, state: to_json(&state)? })
    }

    /// Finish adding a passkey with the browser's answer (`credential`: JSON).
    #[allow(clippy::too_many_arguments)]
    pub async fn register(
        &self,
        pool: &PgPool,
        audit: &AuditSink,
        meta: &RequestMeta,
        user_id: Uuid,
        state: Value,
        credential: &str,
        name: &str,
    ) -> Result<(), PasskeyError> {
        let state: PasskeyRegistration = from_json(state)?;
        let answer: RegisterPublicKeyCredential = serde_json::from_str(credential).map_err(invalid)?;
        let passkey = self.webauthn()?.finish_passkey_registration(&answer, &state).map_err(invalid)?;
        let stored = to_json(&passkey)?;
        if !passkeys::insert(pool, user_id, passkey.cred_id().as_ref(), &stored, name).await? {
            return Err(PasskeyError::Duplicate);
        }
        let event = Event::new("account.passkey_added", Outcome::Success).during(meta).subject(user_id.to_string());
        audit.record(event.detail(name.to_owned())).await;
        Ok(())
    }

    /// Start a sign-in with a passkey alone: the authenticator offers the person's accounts.
    pub fn sign_in(&self) -> Result<Ceremony, PasskeyError> {
        let (options, state) = self.webauthn()?.start_discoverable_authentication().map_err(invalid)?;
        let mut options = to_json(&options)?;
        // A button starts this ceremony, not the browser's autofill.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        Ok(Ceremony { options, state: to_json(&state)? })
    }

    /// Finish a sign-in with a passkey alone: the account it names, if enabled.
    pub async fn finish_sign_in(
        &self,
        pool: &PgPool,
        audit: &AuditSink,
        meta: &RequestMeta,
        state: Value,
        credential: &str,
    ) -> Result<User, PasskeyError> {
        let webauthn = self.webauthn()?;
        let state: DiscoverableAuthentication = from_json(state)?;
        let answer: PublicKeyCredential = serde_json::from_str(credential).map_err(invalid)?;
        let result = async {
            let (user_id, credential_id) = webauthn.identify_discoverable_authentication(&answer).map_err(invalid)?;
            let stored = passkeys::by_credential_id(pool, credential_id).await?.ok_or(PasskeyError::Unknown)?;
            if stored.user_id != user_id {
                return Err(PasskeyError::Unknown);
            }
            let mut passkey = passkey_of(&stored)?;
            let key = DiscoverableKey::from(&passkey);
            let outcome = webauthn.finish_discoverable_authentication(&answer, state, &[key]).map_err(invalid)?;
            passkey.update_credential(&outcome);
            passkeys::used(pool, stored.id, &to_json(&passkey)?).await?;
            let user = users::by_id(pool, user_id).await?.ok_or(PasskeyError::Unknown)?;
            if user.disabled {
                return Err(PasskeyError::Disabled);
            }
            Ok(user)
        }
        .await;
        record(audit, meta, result.as_ref().map(|u| u.id), "signed in with a passkey").await;
        result
    }

    /// Start the second factor with one of `user_id`'s passkeys; `None` if they have none.
    pub async fn second_factor(&self, pool: &PgPool, user_id: Uuid) -> Result<Option<Ceremony>, PasskeyError> {
        let stored = passkeys::for_user(pool, user_id).await?;
        if stored.is_empty() {
            return Ok(None);
        }
        let keys = stored.iter().map(passkey_of).collect::<Result<Vec<_>, _>>()?;
        let (options, state) = self.webauthn()?.start_passkey_authentication(&keys).map_err(invalid)?;
        Ok(Some(Ceremony { options: to_json(&options)?, state: to_json(&state)? }))
    }

    /// Finish the second factor with one of `user_id`'s passkeys.
    pub async fn finish_second_factor(
        &self,
        pool: &PgPool,
        audit: &AuditSink,
        meta: &RequestMeta,
        user_id: Uuid,
        state: Value,
        credential: &str,
    ) -> Result<(), PasskeyError> {
        let webauthn = self.webauthn()?;
        let state: PasskeyAuthentication = from_json(state)?;
        let answer: PublicKeyCredential = serde_json::from_str(credential).map_err(invalid)?;
        let result = async {
            let outcome = webauthn.finish_passkey_authentication(&answer, &state).map_err(invalid)?;
            let stored =
                passkeys::by_credential_id(pool, outcome.cred_id().as_ref()).await?.ok_or(PasskeyError::Unknown)?;
            if stored.user_id != user_id {
                return Err(PasskeyError::Unknown);
            }
            let mut passkey = passkey_of(&stored)?;
            passkey.update_credential(&outcome);
            passkeys::used(pool, stored.id, &to_json(&passkey)?).await?;
            Ok(user_id)
        }
        .await;
        record(audit, meta, result.as_ref().map(|u| *u), "second factor: a passkey").await;
        result.map(|_| ())
    }
}

async fn record(audit: &AuditSink, meta: &RequestMeta, result: Result<Uuid, &PasskeyError>, what: &str) {
    let event = match result {
        Ok(user) => Event::new("login.passkey", Outcome::Success).subject(user.to_string()).detail(what.to_owned()),
        Err(e) => Event::new("login.passkey_failed", Outcome::Denied).detail(e.to_string()),
    };
    audit.record(event.during(meta)).await;
}

/// The person's passkeys.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<PasskeyInfo>, sqlx::Error> {
    Ok(passkeys::for_user(pool, user_id)
        .await?
        .into_iter()
        .map(|s| PasskeyInfo { id: s.id, name: s.name, created_at: s.created_at, last_used_at: s.last_used_at })
        .collect())
}

/// Whether the person has a passkey (then a password sign-in asks for a second factor).
pub async fn any(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(!passkeys::for_user(pool, user_id).await?.is_empty())
}

/// Remove one of the person's passkeys.
pub async fn remove(
    pool: &PgPool,
    audit: &AuditSink,
    meta: &RequestMeta,
    user_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let removed = passkeys::delete(pool, user_id, id).await?;
    if removed {
        let event = Event::new("account.passkey_removed", Outcome::Success).during(meta).subject(user_id.to_string());
        audit.record(event.detail(id.to_string())).await;
    }
    Ok(removed)
}
