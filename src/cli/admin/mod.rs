//! Admin commands: `resource`, `user`, `client` and `audit`, one file each; this file holds what
//! they share. They print results on standard output and announce changes to running instances
//! through PostgreSQL notifications.

use std::io::{BufRead as _, IsTerminal as _};

use sqlx::PgPool;

use crate::cli::Failure;
use crate::config::ConfigError;
use crate::platform::audit::Event;
use crate::store;

pub mod audit;
pub mod client;
pub mod prune;
pub mod resource;
pub mod upstream;
pub mod user;

/// Record an admin action in the audit log (synchronously: the command waits for it).
pub async fn admin_event(pool: &PgPool, event: Event) -> Result<(), Failure> {
    let event = event.detail_default("cli");
    event.log_now();
    store::audit::insert(pool, &[event.row()]).await.map_err(db)
}

/// A usage error, naming the argument or flag (exit code 2).
fn usage(key: &str, message: impl Into<String>) -> Failure {
    ConfigError::new(key, message).into()
}

/// A database failure (exit code 1).
fn db(e: sqlx::Error) -> Failure {
    Failure::Other(e.into())
}

/// Usernames: 1 to 64 of letters, digits and `. _ @ + -`.
fn check_username(username: &str) -> Result<(), Failure> {
    let ok = (1..=64).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'));
    if ok { Ok(()) } else { Err(usage("USERNAME", "must be 1 to 64 letters, digits or . _ @ + -")) }
}

/// The new password: the first line of standard input, or typed twice at a prompt; checked against the policy.
fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        read_secret_line()?
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                "--password-stdin",
                "standard input is not a terminal: pass --password-stdin to read the password from it",
            ));
        }
        let first = rpassword::prompt_password("Password: ").map_err(|e| Failure::Other(e.into()))?;
        let second = rpassword::prompt_password("Repeat password: ").map_err(|e| Failure::Other(e.into()))?;
        if first != second {
            return Err(usage("password", "the two passwords differ"));
        }
        first
    };
    crate::signin::password::check_policy(&password).map_err(|e| usage("password", e.to_string()))?;
    Ok(password)
}

/// A secret from the first line of standard input (never from an argument: those show in `ps`).
fn read_secret_line() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::Other(e.into()))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Hash on a blocking thread: argon2 is slow on purpose.
async fn hash(password: String) -> Result<String, Failure> {
    tokio::task::spawn_blocking(move || crate::signin::password::hash_blocking(&password))
        .await
        .map_err(|e| Failure::Other(e.into()))?
        .map_err(|e| Failure::Other(e.into()))
}
