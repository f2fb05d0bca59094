//! `tessera keys`: add a signing key (`rotate`) and list the keys with their status.

use clap::Subcommand;
use sqlx::PgPool;

use super::Failure;
use super::admin::admin_event;
use super::dev::AdminDb;
use crate::config::{Config, ConfigError, format_duration, parse_duration};
use crate::platform::audit::{Event, Outcome};
use crate::store::{self, keys::KeyRow};
use crate::tokens::keys::{self, Alg, KeyRing, KeyStatus};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key. It is published in the JWKS at once and starts signing after
    /// --delay (default: the longer of the access-token lifetime and the JWKS cache time);
    /// the previous key stays published until every token it signed has expired.
    Rotate {
        /// Delay before the new key signs, e.g. 10m, 1h, or 0s to sign at once.
        #[arg(long, value_name = "DURATION")]
        delay: Option<String>,
        /// Which key: ES256 (access tokens, the default), RS256 (ID tokens), or all.
        #[arg(long, value_name = "ALG", default_value = "ES256")]
        alg: String,
    },
    /// List the signing keys and their status (pending, active, retiring, retired).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, db: &AdminDb, cmd: &KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Rotate { delay, alg } => {
            let algs: Vec<Alg> = match alg.to_ascii_uppercase().as_str() {
                "ALL" => Alg::ALL.to_vec(),
                other => {
                    vec![Alg::parse(other).ok_or_else(|| ConfigError::new("--alg", "must be ES256, RS256 or all"))?]
                }
            };
            rotate(config, db, delay.as_deref(), &algs).await
        }
        KeysCommand::List { json } => list(config, &db.pool, *json).await,
    }
}

async fn rotate(config: &Config, db: &AdminDb, delay: Option<&str>, algs: &[Alg]) -> Result<(), Failure> {
    let master = match &db.master_key {
        Some(m) => m.clone(),
        None => config.require_master_key()?.clone(),
    };
    let delay = match delay {
        Some(d) => parse_duration(d).map_err(|m| ConfigError::new("--delay", m))?,
        None => crate::tokens::keys::default_rotation_delay(config.access_token_ttl, config.key_rotation_delay),
    };
    // Loading the ring first proves the master key decrypts the keys already stored, so a
    // wrong key can never add a key that the servers could not read.
    KeyRing::load(&db.pool, master.clone(), crate::tokens::keys::signing_grace(config.access_token_ttl)).await?;
    let activates_at = chrono::Utc::now()
        + chrono::Duration::from_std(delay).map_err(|_| ConfigError::new("--delay", "is too long"))?;
    for alg in algs {
        let new = keys::generate(&master, *alg)?.row();
        store::keys::insert(&db.pool, &new, activates_at).await.map_err(anyhow::Error::from)?;
        let event = Event::new("admin.keys.rotated", Outcome::Success).detail(format!("{} {}", new.alg, new.kid));
        admin_event(&db.pool, event).await?;
        println!(
            "added signing key {}{}",
            new.kid,
            if *alg == Alg::Es256 { String::new() } else { format!(" ({})", new.alg) }
        );
    }
    println!(
        "published now; signs from {} (in {})",
        activates_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        format_duration(delay)
    );
    Ok(())
}

async fn list(config: &Config, pool: &PgPool, json: bool) -> Result<(), Failure> {
    let rows = store::keys::list(pool).await.map_err(anyhow::Error::from)?;
    let grace = crate::tokens::keys::signing_grace(config.access_token_ttl);
    let activations: Vec<_> = rows.iter().map(|r| (Alg::parse(&r.alg).unwrap_or(Alg::Es256), r.activates_at)).collect();
    let now = chrono::Utc::now();
    let statuses: Vec<KeyStatus> = (0..rows.len()).map(|i| keys::status_of(&activations, i, grace, now)).collect();
    if json {
        print_json(&rows, &statuses)?;
    } else {
        print_table(&rows, &statuses);
    }
    Ok(())
}

fn print_json(rows: &[KeyRow], statuses: &[KeyStatus]) -> Result<(), Failure> {
    let list: Vec<_> = rows
        .iter()
        .zip(statuses)
        .map(|(row, status)| {
            serde_json::json!({
                "kid": row.kid,
                "alg": row.alg,
                "status": status.name(),
                "created_at": row.created_at,
                "activates_at": row.activates_at,
                "published_until": status.published_until(),
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list).map_err(anyhow::Error::from)?);
    Ok(())
}

fn print_table(rows: &[KeyRow], statuses: &[KeyStatus]) {
    println!("{:<45} {:<6} {:<9} {:<21} {:<21}", "KID", "ALG", "STATUS", "ACTIVATES", "PUBLISHED UNTIL");
    for (row, status) in rows.iter().zip(statuses) {
        let until = match status {
            KeyStatus::Retiring(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            KeyStatus::Retired => "-".into(),
            _ => "(while current)".into(),
        };
        println!(
            "{:<45} {:<6} {:<9} {:<21} {:<21}",
            row.kid,
            row.alg,
            status.name(),
            row.activates_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until
        );
    }
}
