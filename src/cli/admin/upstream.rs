//! `tessera upstream`: identity providers people sign in through (OpenID Connect, Google,
//! Microsoft Entra, GitHub), and who of their people may in.

use clap::{Args, Subcommand, ValueEnum};
use sqlx::PgPool;

use super::{admin_event, db, usage};
use crate::cli::Failure;
use crate::config::{Config, MasterKey};
use crate::platform::audit::{Event, Outcome};
use crate::signin::federation::providers::{self, AddError, NewUpstream, Preset};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PresetName {
    Google,
    Entra,
    Github,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Accounts {
    /// An unknown person who passes the allowlists gets an account on first login.
    Jit,
    /// Only people invited with `tessera user add NAME --email E --invite` (or linked) may in.
    Invite,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A short name (a-z, 0-9, - and _): part of the redirect URI.
    name: String,
    /// A generic OpenID Connect provider, by issuer (discovery at ISSUER/.well-known/openid-configuration).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    issuer: Option<String>,
    #[arg(long, value_enum)]
    preset: Option<PresetName>,
    /// Entra: the tenant id or domain.
    #[arg(long, required_if_eq("preset", "entra"))]
    tenant: Option<String>,
    /// GitHub Enterprise Server: its address (default https://github.com).
    #[arg(long)]
    github_url: Option<String>,
    /// GitHub Enterprise Server: its REST API (default GITHUB_URL/api/v3).
    #[arg(long)]
    github_api_url: Option<String>,
    #[arg(long)]
    client_id: String,
    /// Read the client secret from the first line of standard input.
    #[arg(long, required = true)]
    client_secret_stdin: bool,
    /// Scopes to ask for (repeat; default: openid email profile, or GitHub's read:user user:email).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// The button's label (default "Sign in with ...").
    #[arg(long)]
    button: Option<String>,
    /// Only people whose verified email is in this domain (repeat for several).
    #[arg(long = "allow-domain")]
    allowed_domains: Vec<String>,
    /// Only this verified email (repeat; combines with --allow-domain: either may match).
    #[arg(long = "allow-email")]
    allowed_emails: Vec<String>,
    /// Only members of one of these groups (OIDC `groups` claim) or GitHub organizations.
    #[arg(long = "require-group")]
    required_groups: Vec<String>,
    /// Whether unknown people get an account on first login (jit) or must be invited.
    #[arg(long, value_enum, default_value = "invite")]
    accounts: Accounts,
    /// Link a first login to an existing account with the same email, if the provider
    /// verified the email. Without it, such a login is refused.
    #[arg(long)]
    link_existing_accounts: bool,
    /// The provider may be on a private network or loopback, and over http.
    #[arg(long)]
    allow_private_network: bool,
}

#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Add a provider. Register Tessera with it first, with the redirect URI
    /// ISSUER/login/upstream/NAME/callback; the client secret is read from standard input.
    Add(Box<AddArgs>),
    /// List the providers.
    List,
    /// Remove a provider; accounts stay, their links to it go.
    Remove { name: String },
}

pub async fn run(
    config: &Config,
    master: Option<&MasterKey>,
    pool: &PgPool,
    cmd: &UpstreamCommand,
) -> Result<(), Failure> {
    match cmd {
        UpstreamCommand::Add(args) => add(config, master, pool, args).await,
        UpstreamCommand::List => list(pool).await,
        UpstreamCommand::Remove { name } => {
            if !providers::remove(pool, name).await.map_err(db)? {
                return Err(usage("NAME", format!("no upstream provider {name}")));
            }
            admin_event(pool, Event::new("admin.upstream.removed", Outcome::Success).detail(name.clone())).await?;
            println!("removed upstream provider {name}");
            Ok(())
        }
    }
}

async fn add(config: &Config, master: Option<&MasterKey>, pool: &PgPool, args: &AddArgs) -> Result<(), Failure> {
    let AddArgs {
        name,
        issuer,
        preset,
        tenant,
        github_url,
        github_api_url,
        client_id,
        scopes,
        button,
        allowed_domains,
        allowed_emails,
        required_groups,
        accounts,
        link_existing_accounts,
        allow_private_network,
        ..
    } = args;
    let preset = match (preset, issuer) {
        (Some(PresetName::Google), _) => Preset::Google,
        (Some(PresetName::Entra), _) => Preset::Entra { tenant: tenant.clone().unwrap_or_default() },
        (Some(PresetName::Github), _) => Preset::GitHub { web: github_url.clone(), api: github_api_url.clone() },
        (None, Some(issuer)) => Preset::Oidc { issuer: issuer.clone() },
        (None, None) => return Err(usage("--issuer", "name the provider's issuer, or a --preset")),
    };
    let new = NewUpstream {
        name: name.clone(),
        preset,
        client_id: client_id.clone(),
        client_secret: super::read_secret_line()?,
        scopes: scopes.iter().flat_map(|s| s.split_whitespace().map(str::to_owned)).collect(),
        button: button.clone(),
        allowed_domains: allowed_domains.clone(),
        allowed_emails: allowed_emails.clone(),
        required_groups: required_groups.clone(),
        accounts: match accounts {
            Accounts::Jit => "jit".into(),
            Accounts::Invite => "invite".into(),
        },
        link_existing: *link_existing_accounts,
        allow_private_network: *allow_private_network,
    };
    let invalid = |e| match e {
        AddError::Invalid(key, message) => usage(key, message),
        AddError::Exists(name) => usage("NAME", format!("an upstream provider {name} already exists")),
        e => Failure::Other(e.into()),
    };
    // What the operator typed is checked first, so a mistake is named even without the key.
    providers::check(&new).map_err(invalid)?;
    let master = match master {
        Some(m) => m.clone(),
        None => config.require_master_key()?.clone(),
    };
    let upstream = providers::add(pool, &master, new).await.map_err(invalid)?;
    let event =
        Event::new("admin.upstream.added", Outcome::Success).detail(format!("{} ({})", upstream.name, upstream.issuer));
    admin_event(pool, event).await?;
    println!("added upstream provider {} ({}, {})", upstream.name, upstream.kind, upstream.issuer);
    match &config.issuer {
        Some(issuer) => println!(
            "redirect URI to register with it: {}/login/upstream/{}/callback",
            issuer.as_str().trim_end_matches('/'),
            upstream.name
        ),
        None => println!("redirect URI to register with it: ISSUER/login/upstream/{}/callback", upstream.name),
    }
    Ok(())
}

async fn list(pool: &PgPool) -> Result<(), Failure> {
    println!("{:<16} {:<7} {:<48} {:<7} WHO MAY IN", "NAME", "KIND", "ISSUER", "ACCOUNTS");
    for u in providers::list(pool).await.map_err(db)? {
        let mut who = Vec::new();
        if !u.allowed_domains.is_empty() {
            who.push(format!("domains {}", u.allowed_domains.join(",")));
        }
        if !u.allowed_emails.is_empty() {
            who.push(format!("emails {}", u.allowed_emails.join(",")));
        }
        if !u.required_groups.is_empty() {
            who.push(format!("groups {}", u.required_groups.join(",")));
        }
        if u.link_existing {
            who.push("links existing accounts".into());
        }
        let who = if who.is_empty() { "anyone the provider signs in".to_owned() } else { who.join("; ") };
        println!("{:<16} {:<7} {:<48} {:<7} {who}", u.name, u.kind, u.issuer, u.accounts);
    }
    Ok(())
}
