//! `tessera resource`: register the MCP servers Tessera issues tokens for, and their introspection credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use sqlx::PgPool;
use uuid::Uuid;

use super::{admin_event, db, usage};
use crate::cli::Failure;
use crate::config::{format_duration, parse_duration};
use crate::oauth::secret::{self, Secret};
use crate::oauth::{resource, scope};
use crate::platform::audit::{Event, Outcome};
use crate::store::resources::{Resource, ScopeDetails};
use crate::store::{self};

#[derive(Debug, Subcommand)]
pub enum ResourceCommand {
    /// Register an MCP server (its canonical URI, RFC 8707) that Tessera issues tokens for.
    Add {
        /// Canonical URI of the MCP server, e.g. https://mcp.example.com/mcp.
        uri: String,
        /// Name shown on the consent page.
        #[arg(long)]
        name: String,
        /// A scope it accepts and its description for the consent page: SCOPE=DESCRIPTION (repeatable).
        #[arg(long = "scope", value_name = "SCOPE=DESCRIPTION")]
        scopes: Vec<String>,
        /// Scope granted when a request names none (repeatable; must be one of --scope).
        #[arg(long = "default-scope", value_name = "SCOPE")]
        default_scopes: Vec<String>,
        /// Access-token lifetime for this resource (5s to 24h).
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        token_ttl: String,
        /// Use this resource when an authorization request names none.
        #[arg(long)]
        default: bool,
    },
    /// List the registered resources.
    List,
    /// Show (or with --rotate, replace) the credentials the resource server uses to call
    /// introspection. The secret is shown only when it is issued.
    Credentials {
        uri: String,
        /// Issue a new secret; the previous one stops working at once.
        #[arg(long)]
        rotate: bool,
    },
    /// Describe a scope on the consent page: its description (a new scope needs one), a longer
    /// text, the tools it unlocks, and whether the person may leave it unchecked. Each call sets
    /// the details, tools and required flag anew.
    Scope {
        uri: String,
        scope: String,
        /// The one-line description (adds the scope when it is new).
        #[arg(long)]
        description: Option<String>,
        /// A longer explanation, shown under the description (up to 2000 characters).
        #[arg(long)]
        details: Option<String>,
        /// A tool this scope unlocks (repeatable), listed under the scope.
        #[arg(long = "tool", value_name = "NAME")]
        tools: Vec<String>,
        /// The person cannot uncheck this scope on the consent page.
        #[arg(long)]
        required: bool,
    },
    /// Remove a resource; every grant and token for it stops working.
    Remove { uri: String },
}

pub async fn run(pool: &PgPool, cmd: &ResourceCommand) -> Result<(), Failure> {
    match cmd {
        ResourceCommand::Add { uri, name, scopes, default_scopes, token_ttl, default } => {
            add(pool, uri, name, scopes, default_scopes, token_ttl, *default).await
        }
        ResourceCommand::List => list(pool).await,
        ResourceCommand::Credentials { uri, rotate } => credentials(pool, uri, *rotate).await,
        ResourceCommand::Scope { uri, scope, description, details, tools, required } => {
            let details = ScopeDetails { details: details.clone(), tools: tools.clone(), required: *required };
            describe_scope(pool, uri, scope, description.as_deref(), details).await
        }
        ResourceCommand::Remove { uri } => remove(pool, uri).await,
    }
}

async fn describe_scope(
    pool: &PgPool,
    uri: &str,
    scope_name: &str,
    description: Option<&str>,
    mut details: ScopeDetails,
) -> Result<(), Failure> {
    let canonical = canonical_uri(uri)?;
    if !scope::is_valid_name(scope_name) || scope_name == scope::OFFLINE_ACCESS {
        return Err(usage("SCOPE", format!("{scope_name:?} is not a valid scope name")));
    }
    let description = description.map(str::trim);
    if description.is_some_and(|d| d.is_empty() || d.chars().count() > 300) {
        return Err(usage("--description", "must be 1 to 300 characters"));
    }
    details.details = details.details.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
    if details.details.as_ref().is_some_and(|d| d.chars().count() > 2000) {
        return Err(usage("--details", "must be at most 2000 characters"));
    }
    let tool_ok = |t: &String| (1..=128).contains(&t.len()) && !t.chars().any(|c| c.is_control() || c.is_whitespace());
    if details.tools.len() > 100 || !details.tools.iter().all(tool_ok) {
        return Err(usage("--tool", "at most 100 tool names of 1 to 128 characters without spaces"));
    }
    details.tools.sort();
    details.tools.dedup();
    if !store::resources::set_scope(pool, &canonical, scope_name, description, &details).await.map_err(db)? {
        return Err(usage(
            "SCOPE",
            format!("{canonical} is not registered, or has no scope {scope_name} (give --description to add it)"),
        ));
    }
    let event = Event::new("admin.resource.scope_described", Outcome::Success).resource(&canonical).scopes(scope_name);
    admin_event(pool, event).await?;
    let required = if details.required { ", required" } else { "" };
    println!("{canonical} {scope_name}: {} tools{required}", details.tools.len());
    Ok(())
}

/// Ids of resource-server credentials: `rs_` and 128 random bits.
fn new_credential_id() -> String {
    format!("rs_{}", secret::new_client_id())
}

fn print_credentials(id: &str, secret: &Secret) {
    println!("introspection_client_id     {id}");
    println!("introspection_client_secret {}", secret.expose());
    eprintln!(
        "The MCP server authenticates to /introspect with these (client_secret_basic or client_secret_post). The secret is shown only now."
    );
}

fn canonical_uri(uri: &str) -> Result<String, Failure> {
    resource::canonicalize(uri).map_err(|m| usage("URI", format!("resource URI {m}")))
}

async fn add(
    pool: &PgPool,
    uri: &str,
    name: &str,
    scopes: &[String],
    default_scopes: &[String],
    token_ttl: &str,
    default: bool,
) -> Result<(), Failure> {
    let uri = canonical_uri(uri)?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(usage("--name", "must be 1 to 200 characters"));
    }
    let (scope_map, defaults) = parse_scopes(scopes, default_scopes)?;
    let ttl = parse_duration(token_ttl).map_err(|m| usage("--token-ttl", m))?;
    if !(Duration::from_secs(5)..=Duration::from_secs(86400)).contains(&ttl) {
        return Err(usage("--token-ttl", "must be between 5s and 24h"));
    }
    let secret = Secret::generate();
    let r = Resource {
        id: Uuid::new_v4(),
        uri: uri.clone(),
        name: name.to_owned(),
        scopes: scope_map,
        default_scopes: defaults,
        token_ttl: ttl,
        is_default: default,
        credential_id: Some(new_credential_id()),
        credential_secret_hash: Some(secret.digest().to_vec()),
        scope_details: Default::default(),
    };
    match store::resources::add(pool, &r).await {
        Ok(()) => {}
        Err(store::resources::AddError::Duplicate) => {
            return Err(usage("URI", format!("{uri} is already registered")));
        }
        Err(store::resources::AddError::Database(e)) => return Err(db(e)),
    }
    admin_event(pool, Event::new("admin.resource.added", Outcome::Success).resource(&uri)).await?;
    println!("resource {}", r.id);
    println!("uri      {uri}");
    print_credentials(r.credential_id.as_deref().unwrap_or_default(), &secret);
    Ok(())
}

/// `--scope SCOPE=DESCRIPTION` values as a map, and the `--default-scope` values (sorted, each one of them).
fn parse_scopes(
    scopes: &[String],
    default_scopes: &[String],
) -> Result<(BTreeMap<String, String>, Vec<String>), Failure> {
    let mut scope_map = BTreeMap::new();
    for item in scopes {
        let (scope_name, description) = item.split_once('=').unwrap_or((item.as_str(), item.as_str()));
        if !scope::is_valid_name(scope_name) || scope_name == scope::OFFLINE_ACCESS {
            return Err(usage("--scope", format!("{scope_name:?} is not a valid scope name")));
        }
        if description.trim().is_empty() || description.chars().count() > 300 {
            return Err(usage("--scope", format!("the description of {scope_name} must be 1 to 300 characters")));
        }
        scope_map.insert(scope_name.to_owned(), description.trim().to_owned());
    }
    let mut defaults = default_scopes.to_vec();
    defaults.sort();
    defaults.dedup();
    if let Some(unknown) = defaults.iter().find(|d| !scope_map.contains_key(*d)) {
        return Err(usage("--default-scope", format!("{unknown} is not one of the --scope values")));
    }
    Ok((scope_map, defaults))
}

async fn list(pool: &PgPool) -> Result<(), Failure> {
    let list = store::resources::list(pool).await.map_err(db)?;
    println!("{:<44} {:<24} {:<6} {:<8} SCOPES", "URI", "NAME", "TTL", "DEFAULT");
    for r in list {
        let scopes: Vec<String> =
            r.scopes.keys().map(|s| if r.default_scopes.contains(s) { format!("{s}*") } else { s.clone() }).collect();
        println!(
            "{:<44} {:<24} {:<6} {:<8} {}",
            r.uri,
            r.name,
            format_duration(r.token_ttl),
            if r.is_default { "yes" } else { "" },
            scopes.join(" ")
        );
    }
    Ok(())
}

async fn credentials(pool: &PgPool, uri: &str, rotate: bool) -> Result<(), Failure> {
    let canonical = canonical_uri(uri)?;
    let list = store::resources::list(pool).await.map_err(db)?;
    let found = list
        .iter()
        .find(|r| r.uri == canonical)
        .ok_or_else(|| usage("URI", format!("{canonical} is not registered")))?;
    if !rotate {
        match &found.credential_id {
            Some(id) => println!("introspection_client_id     {id}"),
            None => println!("no credentials yet"),
        }
        eprintln!("The secret cannot be shown again; --rotate issues a new one (the old one stops working).");
        return Ok(());
    }
    let id = found.credential_id.clone().unwrap_or_else(new_credential_id);
    let secret = Secret::generate();
    store::resources::set_credentials(pool, &canonical, &id, &secret.digest()).await.map_err(db)?;
    admin_event(pool, Event::new("admin.resource.credentials_rotated", Outcome::Success).resource(&canonical)).await?;
    print_credentials(&id, &secret);
    Ok(())
}

async fn remove(pool: &PgPool, uri: &str) -> Result<(), Failure> {
    let canonical = canonical_uri(uri)?;
    if store::resources::remove(pool, &canonical).await.map_err(db)? {
        admin_event(pool, Event::new("admin.resource.removed", Outcome::Success).resource(&canonical)).await?;
        println!("removed {canonical}");
        Ok(())
    } else {
        Err(usage("URI", format!("{canonical} is not registered")))
    }
}
