//! Human passwords: argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane), hashed and
//! verified on blocking threads, at most a few at a time so a login flood cannot exhaust memory.
//! An unknown user is checked against a dummy hash, so it costs the same as a wrong password.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    #[error("password hashing failed")]
    Hashing,
}

/// Concurrent argon2 computations (each holds 19 MiB).
static SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)));

/// Verified against when the user does not exist.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking("tessera dummy password for unknown users").unwrap_or_default());

pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&len) { Ok(()) } else { Err(PasswordError::Length) }
}

/// Hash on the current thread (CLI use).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|_| PasswordError::Hashing)
}

/// Compute the dummy hash now, so the first unknown-user login is not faster than the rest.
pub async fn warm_up() {
    let _ = tokio::task::spawn_blocking(|| DUMMY_HASH.len()).await;
}

/// Verify `password` against `phc`, or against the dummy hash when there is no user.
/// Returns true only for a real hash that matches.
pub async fn verify(password: String, phc: Option<String>) -> bool {
    let Ok(_permit) = SLOTS.acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        let real = phc.is_some();
        let target = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = password.len() <= MAX_LEN * 4
            && Argon2::default().verify_password(password.as_bytes(), target.as_str()).is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong".into(), Some(h)).await);
        assert!(!verify("tessera dummy password for unknown users".into(), None).await);
        assert!(hash_blocking("short").is_err());
    }
}
