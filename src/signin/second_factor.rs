//! The second factor after a password: a TOTP authenticator app (RFC 6238, `oauth::totp`) and
//! ten one-time recovery codes. The secret is sealed under the master key (in the database once
//! confirmed, in the browser session while the person sets it up); recovery codes are stored as
//! SHA-256 digests. Codes are checked within the login throttle (a guess counts like a wrong
//! password), and a code is accepted once. Every change is audited.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::MasterKey;
use crate::oauth::{secret, totp};
use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::store::login_throttle::{self, Limits};
use crate::store::second_factors;

/// How many recovery codes a person gets.
pub const RECOVERY_CODES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum SecondFactorError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a second-factor secret could not be sealed or opened")]
    Sealing,
}

fn aad(user_id: Uuid) -> String {
    format!("totp:{user_id}")
}

/// A new secret for an authenticator app.
pub fn new_secret() -> Vec<u8> {
    rand::random::<[u8; totp::SECRET_LEN]>().to_vec()
}

/// The secret being set up, sealed for the browser session (bound to the user).
pub fn seal_pending(master: &MasterKey, user_id: Uuid, secret: &[u8]) -> Result<String, SecondFactorError> {
    let sealed = crate::tokens::keys::encrypt(master, &format!("pending-{}", aad(user_id)), secret)
        .map_err(|_| SecondFactorError::Sealing)?;
    Ok(B64URL.encode(sealed))
}

/// The secret being set up, from the session; `None` if it is not this user's or was tampered with.
pub fn open_pending(master: &MasterKey, user_id: Uuid, sealed: &str) -> Option<Vec<u8>> {
    let bytes = B64URL.decode(sealed).ok()?;
    crate::tokens::keys::decrypt(master, &format!("pending-{}", aad(user_id)), &bytes).ok()
}

/// Ten recovery codes: 50 random bits each, as two groups of five letters and digits.
fn recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let code = totp::base32(&rand::random::<[u8; 7]>()).to_ascii_lowercase();
            format!("{}-{}", &code[..5], &code[5..10])
        })
        .collect()
}

/// A recovery code as typed (any case, with or without the dash and spaces), normalized.
fn normalized_recovery(code: &str) -> Option<String> {
    let kept: String = code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    (kept.len() == 10).then(|| format!("{}-{}", &kept[..5], &kept[5..]))
}

/// Confirm the setup with a code from the app: the secret is stored and the recovery codes
/// returned (shown once). `None` when the code does not match.
pub async fn enable(
    pool: &PgPool,
    master: &MasterKey,
    audit: &AuditSink,
    meta: &RequestMeta,
    user_id: Uuid,
    pending: &[u8],
    code: &str,
) -> Result<Option<Vec<String>>, SecondFactorError> {
    let Some(step) = totp::verify(pending, code, chrono::Utc::now().timestamp(), 0) else {
        return Ok(None);
    };
    let sealed =
        crate::tokens::keys::encrypt(master, &aad(user_id), pending).map_err(|_| SecondFactorError::Sealing)?;
    let codes = recovery_codes();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| secret::digest(c).to_vec()).collect();
    second_factors::enable_totp(pool, user_id, &sealed, step, &hashes).await?;
    let event = Event::new("account.totp_enabled", Outcome::Success).during(meta).subject(user_id.to_string());
    audit.record(event.detail(format!("{RECOVERY_CODES} recovery codes"))).await;
    Ok(Some(codes))
}

/// Whether the person has set up an authenticator app.
pub async fn set_up(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    second_factors::has_totp(pool, user_id).await
}

/// How a second-factor check ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// A code from the app, or (`recovery`) one of the recovery codes, now used up.
    Accepted {
        recovery: bool,
    },
    Refused,
    Throttled {
        retry_after_secs: i64,
    },
}

/// Check a code from the person's app or one of their recovery codes, within the login throttle
/// (keyed on the account's second factor and the source).
pub async fn check(
    pool: &PgPool,
    master: &MasterKey,
    audit: &AuditSink,
    meta: &RequestMeta,
    limits: Limits,
    user_id: Uuid,
    code: &str,
) -> Result<Check, SecondFactorError> {
    let account = aad(user_id);
    let source = meta.source.to_string();
    if let Some(until) = login_throttle::reserve(pool, &account, &source, limits).await? {
        let event = Event::new("login.second_factor_throttled", Outcome::RateLimited).during(meta);
        audit.record(event.subject(user_id.to_string())).await;
        return Ok(Check::Throttled { retry_after_secs: (until - chrono::Utc::now()).num_seconds().max(1) });
    }
    let accepted = match verify(pool, master, user_id, code).await? {
        Some(recovery) => recovery,
        None => {
            login_throttle::failed(pool, &account, &source, limits).await?;
            let event = Event::new("login.second_factor_failed", Outcome::Denied).during(meta);
            audit.record(event.subject(user_id.to_string())).await;
            return Ok(Check::Refused);
        }
    };
    login_throttle::release(pool, &account, &source).await?;
    let detail = if accepted { "recovery code" } else { "authenticator app" };
    let event = Event::new("login.second_factor", Outcome::Success).during(meta).subject(user_id.to_string());
    audit.record(event.detail(detail)).await;
    Ok(Check::Accepted { recovery: accepted })
}

/// `Some(false)`: a code from the app, `Some(true)`: a recovery code, `None`: neither.
async fn verify(
    pool: &PgPool,
    master: &MasterKey,
    user_id: Uuid,
    code: &str,
) -> Result<Option<bool>, SecondFactorError> {
    let Some(stored) = second_factors::totp(pool, user_id).await? else { return Ok(None) };
    if let Some(recovery) = normalized_recovery(code) {
        let used = second_factors::use_recovery_code(pool, user_id, &secret::digest(&recovery)).await?;
        return Ok(used.then_some(true));
    }
    let key = crate::tokens::keys::decrypt(master, &aad(user_id), &stored.secret_enc)
        .map_err(|_| SecondFactorError::Sealing)?;
    let Some(step) = totp::verify(&key, code, chrono::Utc::now().timestamp(), stored.last_step) else {
        return Ok(None);
    };
    // Two requests with the same code: only one moves the step on.
    Ok(second_factors::accept_step(pool, user_id, step).await?.then_some(false))
}

/// Recovery codes left, when the person has a second factor.
pub async fn status(pool: &PgPool, user_id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    if !second_factors::has_totp(pool, user_id).await? {
        return Ok(None);
    }
    Ok(Some(second_factors::recovery_codes_left(pool, user_id).await?))
}

/// Turn the second factor off (`event`: `account.totp_disabled` by the person, or
/// `admin.user.second_factors_reset`). Whether there was one.
pub async fn remove(
    pool: &PgPool,
    audit: &AuditSink,
    meta: Option<&RequestMeta>,
    user_id: Uuid,
    event: &'static str,
) -> Result<bool, sqlx::Error> {
    let removed = second_factors::remove(pool, user_id).await?;
    if removed {
        let mut e = Event::new(event, Outcome::Success).subject(user_id.to_string());
        if let Some(meta) = meta {
            e = e.during(meta);
        }
        audit.record(e).await;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_distinct_and_read_back_as_typed() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), RECOVERY_CODES);
        for code in &codes {
            assert_eq!(code.len(), 11);
            assert_eq!(normalized_recovery(code).as_deref(), Some(code.as_str()));
            assert_eq!(normalized_recovery(&code.to_uppercase().replace('-', " ")).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalized_recovery("123456"), None, "an app code is not a recovery code");
    }

    #[test]
    fn pending_secrets_are_bound_to_the_user() {
        let master = MasterKey::generate();
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let secret = new_secret();
        let sealed = seal_pending(&master, alice, &secret).unwrap();
        assert_eq!(open_pending(&master, alice, &sealed), Some(secret));
        assert_eq!(open_pending(&master, bob, &sealed), None);
        assert_eq!(open_pending(&MasterKey::generate(), alice, &sealed), None);
    }
}
