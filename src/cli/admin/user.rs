//! `tessera user`: local accounts, their passwords, and the approvals they gave.

use clap::Subcommand;
use sqlx::PgPool;
use uuid::Uuid;

use super::{admin_event, check_username, db, hash, read_password, usage};
use crate::cli::Failure;
use crate::platform::audit::{Event, Outcome};
use crate::store;
use crate::store::users::ProfileChange;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local account. The password is read from a prompt, or from standard input with --password-stdin.
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// The person's name (OpenID Connect `name`, with the profile scope).
        #[arg(long)]
        name: Option<String>,
        /// The email address is known to be the person's (OpenID Connect `email_verified`).
        #[arg(long)]
        email_verified: bool,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// No password: invite the person by --email to sign in through an upstream identity
        /// provider (`tessera upstream`); their first login with that verified email claims the account.
        #[arg(long, requires = "email", conflicts_with = "password_stdin")]
        invite: bool,
    },
    /// Change an account's profile (what the profile and email scopes release). An empty value
    /// clears a field; a new email is unverified unless --email-verified says otherwise.
    Edit {
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// true or false.
        #[arg(long, value_name = "BOOL")]
        email_verified: Option<bool>,
    },
    /// Set a new password. Ends the user's browser sessions and revokes every grant they made
    /// (refresh tokens stop at once; access tokens turn inactive at introspection).
    Passwd {
        username: String,
        #[arg(long)]
        password_stdin: bool,
        /// Keep the user's grants (refresh tokens keep working); sessions still end.
        #[arg(long)]
        keep_grants: bool,
    },
    /// Disable an account: it can no longer sign in, its browser sessions end, and every grant
    /// it made is revoked.
    Disable { username: String },
    /// Enable a disabled account.
    Enable { username: String },
    /// Withdraw a user's approvals (of one client, or all): the consent page is shown again and
    /// every grant made with them is revoked.
    Revoke {
        username: String,
        /// Only this client.
        #[arg(long, allow_hyphen_values = true)]
        client: Option<String>,
    },
    /// Remove a user's second factors (authenticator app, recovery codes and passkeys), for
    /// someone who lost them: their password alone signs them in until they set one up again.
    ResetSecondFactors { username: String },
    /// List the accounts.
    List,
}

pub async fn run(pool: &PgPool, cmd: &UserCommand) -> Result<(), Failure> {
    match cmd {
        UserCommand::Add { username, email, name, email_verified, password_stdin, invite } => {
            add(pool, username, email.as_deref(), (!*invite).then_some(*password_stdin)).await?;
            if name.is_some() || *email_verified {
                let change = ProfileChange {
                    email: None,
                    name: cleared(name.as_deref()),
                    email_verified: email_verified.then_some(true),
                };
                edit(pool, username, change).await?;
            }
            Ok(())
        }
        UserCommand::Edit { username, email, name, email_verified } => {
            let change = ProfileChange {
                email: cleared(email.as_deref()),
                name: cleared(name.as_deref()),
                email_verified: *email_verified,
            };
            edit(pool, username, change).await
        }
        UserCommand::Passwd { username, password_stdin, keep_grants } => {
            passwd(pool, username, *password_stdin, *keep_grants).await
        }
        UserCommand::Disable { username } => set_disabled(pool, username, true).await,
        UserCommand::Enable { username } => set_disabled(pool, username, false).await,
        UserCommand::Revoke { username, client } => revoke(pool, username, client.as_deref()).await,
        UserCommand::ResetSecondFactors { username } => reset_second_factors(pool, username).await,
        UserCommand::List => list(pool).await,
    }
}

async fn reset_second_factors(pool: &PgPool, username: &str) -> Result<(), Failure> {
    let user = store::users::by_username(pool, username).await.map_err(db)?.ok_or_else(|| no_user(username))?;
    let totp = store::second_factors::remove(pool, user.id).await.map_err(db)?;
    let passkeys = store::passkeys::delete_all(pool, user.id).await.map_err(db)?;
    if !totp && passkeys == 0 {
        println!("{username} has no second factor");
        return Ok(());
    }
    let event = Event::new("admin.user.second_factors_reset", Outcome::Success).subject(user.id.to_string());
    admin_event(pool, event.detail(format!("{username}: authenticator app {totp}, {passkeys} passkeys"))).await?;
    println!("removed the second factors of {username} (authenticator app: {totp}, passkeys: {passkeys})");
    Ok(())
}

/// A profile value as given: absent leaves the field, empty clears it.
fn cleared(value: Option<&str>) -> Option<Option<&str>> {
    value.map(|v| Some(v.trim()).filter(|v| !v.is_empty()))
}

fn no_user(username: &str) -> Failure {
    usage("USERNAME", format!("no user {username}"))
}

fn check_email(email: Option<&str>) -> Result<(), Failure> {
    if let Some(email) = email
        && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
    {
        return Err(usage("--email", "is not an email address"));
    }
    Ok(())
}

/// Change a profile (after `add`, or `user edit`).
async fn edit(pool: &PgPool, username: &str, change: ProfileChange<'_>) -> Result<(), Failure> {
    check_email(change.email.flatten())?;
    if change.name.flatten().is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
        return Err(usage("--name", "must be at most 200 characters, without control characters"));
    }
    if change.email.is_none() && change.name.is_none() && change.email_verified.is_none() {
        return Err(usage("user edit", "nothing to change (--email, --name, --email-verified)"));
    }
    let id =
        store::users::update_profile(pool, username, &change).await.map_err(db)?.ok_or_else(|| no_user(username))?;
    admin_event(pool, Event::new("admin.user.edited", Outcome::Success).subject(id.to_string())).await?;
    let user = store::users::by_id(pool, id).await.map_err(db)?.ok_or_else(|| no_user(username))?;
    println!(
        "{}: name {}, email {} ({})",
        user.username,
        user.name.as_deref().unwrap_or("-"),
        user.email.as_deref().unwrap_or("-"),
        if user.email_verified { "verified" } else { "unverified" }
    );
    Ok(())
}

/// Add an account; `password_stdin`: `None` for an invitation (no password).
async fn add(pool: &PgPool, username: &str, email: Option<&str>, password_stdin: Option<bool>) -> Result<(), Failure> {
    check_username(username)?;
    check_email(email)?;
    let hashed = match password_stdin {
        Some(from_stdin) => Some(hash(read_password(from_stdin)?).await?),
        None => None,
    };
    let id = Uuid::new_v4();
    if !store::users::insert(pool, id, username, email, hashed.as_deref()).await.map_err(db)? {
        return Err(usage("USERNAME", format!("{username} already exists")));
    }
    let event = if hashed.is_some() { "admin.user.added" } else { "admin.user.invited" };
    admin_event(pool, Event::new(event, Outcome::Success).subject(id.to_string())).await?;
    println!("{} {id}", if hashed.is_some() { "user" } else { "invited user" });
    Ok(())
}

async fn passwd(pool: &PgPool, username: &str, password_stdin: bool, keep_grants: bool) -> Result<(), Failure> {
    let hashed = hash(read_password(password_stdin)?).await?;
    let (id, evicted) = store::users::set_password(pool, username, &hashed, keep_grants)
        .await
        .map_err(db)?
        .ok_or_else(|| no_user(username))?;
    let grants = if keep_grants { "grants kept".to_owned() } else { format!("{} grants revoked", evicted.grants) };
    let detail = format!("{username}: {} sessions ended, {grants}", evicted.sessions);
    let event = Event::new("admin.user.password_changed", Outcome::Success).subject(id.to_string());
    admin_event(pool, event.detail(detail.clone())).await?;
    println!("password changed for {detail}");
    Ok(())
}

async fn set_disabled(pool: &PgPool, username: &str, disable: bool) -> Result<(), Failure> {
    let evicted =
        store::users::set_disabled(pool, username, disable).await.map_err(db)?.ok_or_else(|| no_user(username))?;
    let (event, detail) = if disable {
        let ended = format!("{} sessions ended, {} grants revoked", evicted.sessions, evicted.grants);
        ("admin.user.disabled", format!("{username}: {ended}"))
    } else {
        ("admin.user.enabled", username.to_owned())
    };
    admin_event(pool, Event::new(event, Outcome::Success).detail(detail.clone())).await?;
    println!("{} {detail}", if disable { "disabled" } else { "enabled" });
    Ok(())
}

async fn revoke(pool: &PgPool, username: &str, client: Option<&str>) -> Result<(), Failure> {
    let user = store::users::by_username(pool, username).await.map_err(db)?.ok_or_else(|| no_user(username))?;
    let (consents, grants) = store::grants::revoke_consent(pool, user.id, client).await.map_err(db)?;
    let mut event = Event::new("consent.revoked", Outcome::Success)
        .subject(user.id.to_string())
        .detail(format!("{consents} approvals, {grants} grants"));
    if let Some(client) = client {
        event = event.client(client);
    }
    admin_event(pool, event).await?;
    println!("withdrew {consents} approval(s) and revoked {grants} grant(s) of {username}");
    Ok(())
}

async fn list(pool: &PgPool) -> Result<(), Failure> {
    println!("{:<36} {:<24} {:<9} {:<32} NAME", "ID", "USERNAME", "STATUS", "EMAIL");
    for u in store::users::list(pool).await.map_err(db)? {
        let email = match u.email {
            Some(email) if u.email_verified => format!("{email} (verified)"),
            Some(email) => email,
            None => String::new(),
        };
        println!(
            "{:<36} {:<24} {:<9} {:<32} {}",
            u.id,
            u.username,
            if u.disabled {
                "disabled"
            } else if u.invited {
                "invited"
            } else {
                "active"
            },
            email,
            u.name.unwrap_or_default()
        );
    }
    Ok(())
}
