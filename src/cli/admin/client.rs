//! `tessera client`: clients registered by the operator, and initial access tokens for dynamic registration.

use std::time::Duration;

use clap::Subcommand;
use sqlx::PgPool;
use uuid::Uuid;

use super::{admin_event, db, usage};
use crate::cli::Failure;
use crate::config::parse_duration;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{redirect_uri, resource};
use crate::platform::audit::{Event, Outcome};
use crate::store::{self, clients::Client};

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client. Prints its client_id, and for --confidential its secret (once).
    Add {
        /// Name shown on the consent page.
        #[arg(long)]
        name: String,
        /// Redirect URI (repeatable): https, http on a loopback host, or a private-use scheme.
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Issue a client secret (client_secret_basic or client_secret_post).
        #[arg(long)]
        confidential: bool,
        /// Extra grant type (repeatable): client_credentials. Clients with redirect URIs get
        /// authorization_code and refresh_token.
        #[arg(long = "grant", value_name = "GRANT_TYPE")]
        grants: Vec<String>,
        /// Limit the client to these resources (repeatable); default: any resource.
        #[arg(long = "resource", value_name = "URI")]
        resources: Vec<String>,
        /// Where the end-session endpoint may send the browser after signing out (repeatable).
        #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
        post_logout_redirect_uris: Vec<String>,
        /// The algorithm of its ID tokens: RS256 (default) or ES256.
        #[arg(long, value_name = "ALG")]
        id_token_alg: Option<String>,
    },
    /// List the clients.
    List,
    /// Remove a client; its grants and tokens stop working.
    Remove {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Create an initial access token for dynamic registration when TESSERA_REGISTRATION=token.
    RegistrationToken {
        /// How long the token is valid.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        expires: String,
        /// How many registrations it allows (default: any number until it expires).
        #[arg(long)]
        uses: Option<u32>,
        /// A note for yourself (who it is for).
        #[arg(long)]
        note: Option<String>,
    },
}

pub async fn run(pool: &PgPool, cmd: &ClientCommand) -> Result<(), Failure> {
    match cmd {
        ClientCommand::Add {
            name,
            redirect_uris,
            confidential,
            grants,
            resources,
            post_logout_redirect_uris,
            id_token_alg,
        } => {
            let openid = openid_metadata(post_logout_redirect_uris, id_token_alg.as_deref())?;
            let new = NewClient { name, redirect_uris, confidential: *confidential, grants, resources, openid };
            add(pool, new).await
        }
        ClientCommand::List => list(pool).await,
        ClientCommand::RegistrationToken { expires, uses, note } => {
            registration_token(pool, expires, *uses, note.as_deref()).await
        }
        ClientCommand::Remove { client_id } => remove(pool, client_id).await,
    }
}

/// What `client add` registers.
struct NewClient<'a> {
    name: &'a str,
    redirect_uris: &'a [String],
    confidential: bool,
    grants: &'a [String],
    resources: &'a [String],
    /// OpenID Connect metadata (post_logout_redirect_uris, id_token_signed_response_alg).
    openid: serde_json::Map<String, serde_json::Value>,
}

/// The OpenID Connect metadata given on the command line, checked.
fn openid_metadata(
    post_logout_redirect_uris: &[String],
    id_token_alg: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    let mut metadata = serde_json::Map::new();
    for uri in post_logout_redirect_uris {
        redirect_uri::validate(uri).map_err(|m| usage("--post-logout-redirect-uri", format!("{uri}: {m}")))?;
    }
    if !post_logout_redirect_uris.is_empty() {
        metadata.insert("post_logout_redirect_uris".into(), serde_json::json!(post_logout_redirect_uris));
    }
    if let Some(alg) = id_token_alg {
        let alg = crate::tokens::keys::Alg::parse(&alg.to_ascii_uppercase())
            .ok_or_else(|| usage("--id-token-alg", "must be RS256 or ES256"))?;
        metadata.insert("id_token_signed_response_alg".into(), alg.as_str().into());
    }
    Ok(metadata)
}

async fn add(pool: &PgPool, new: NewClient<'_>) -> Result<(), Failure> {
    let NewClient { name, redirect_uris, confidential, grants, resources, openid } = new;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(usage("--name", "must be 1 to 200 characters"));
    }
    for uri in redirect_uris {
        redirect_uri::validate(uri).map_err(|m| usage("--redirect-uri", format!("{uri}: {m}")))?;
    }
    let grant_types = grant_types(redirect_uris, confidential, grants)?;
    let allowed = allowed_resources(pool, resources).await?;
    let secret = confidential.then(Secret::generate);
    let mut client = Client::new(secret::new_client_id(), name.to_owned(), "admin");
    if confidential {
        client.token_endpoint_auth_method = "client_secret_basic".into();
    }
    client.secret_hash = secret.as_ref().map(|s| s.digest().to_vec());
    client.redirect_uris = redirect_uris.to_vec();
    client.grant_types = grant_types;
    client.allowed_resources = allowed;
    client.metadata = serde_json::Value::Object(openid);
    store::clients::insert(pool, &client).await.map_err(db)?;
    admin_event(pool, Event::new("admin.client.added", Outcome::Success).client(&client.client_id)).await?;
    println!("client_id     {}", client.client_id);
    if let Some(secret) = secret {
        println!("client_secret {}", secret.expose());
        eprintln!("The secret is shown only now; store it safely.");
    }
    Ok(())
}

/// The grant types of a new client: the code flow when it has redirect URIs, plus each `--grant`.
fn grant_types(redirect_uris: &[String], confidential: bool, grants: &[String]) -> Result<Vec<String>, Failure> {
    let mut grant_types: Vec<String> = Vec::new();
    if !redirect_uris.is_empty() {
        grant_types.extend(["authorization_code".to_owned(), "refresh_token".to_owned()]);
    }
    for g in grants {
        match g.as_str() {
            "client_credentials" if !confidential => {
                return Err(usage("--grant", "client_credentials needs --confidential"));
            }
            "client_credentials" | "authorization_code" | "refresh_token" => {
                if !grant_types.contains(g) {
                    grant_types.push(g.clone());
                }
            }
            other => return Err(usage("--grant", format!("{other} is not supported (client_credentials)"))),
        }
    }
    if grant_types.is_empty() {
        return Err(usage("--redirect-uri", "a client needs redirect URIs, or --grant client_credentials"));
    }
    if grant_types.iter().any(|g| g == "authorization_code") && redirect_uris.is_empty() {
        return Err(usage("--redirect-uri", "the authorization_code grant needs at least one redirect URI"));
    }
    Ok(grant_types)
}

/// The ids of the `--resource` URIs, each of which must be registered.
async fn allowed_resources(pool: &PgPool, resources: &[String]) -> Result<Vec<Uuid>, Failure> {
    let known = store::resources::list(pool).await.map_err(db)?;
    let mut allowed = Vec::new();
    for uri in resources {
        let canonical = resource::canonicalize(uri).map_err(|m| usage("--resource", format!("{uri}: {m}")))?;
        let found = known
            .iter()
            .find(|r| r.uri == canonical)
            .ok_or_else(|| usage("--resource", format!("{canonical} is not registered (tessera resource add)")))?;
        allowed.push(found.id);
    }
    Ok(allowed)
}

async fn list(pool: &PgPool) -> Result<(), Failure> {
    println!("{:<24} {:<24} {:<7} {:<20} REDIRECT URIS", "CLIENT ID", "NAME", "ORIGIN", "AUTH");
    for c in store::clients::list(pool).await.map_err(db)? {
        let id: String = if c.client_id.chars().count() > 24 {
            format!("{}…", c.client_id.chars().take(23).collect::<String>())
        } else {
            c.client_id.clone()
        };
        println!(
            "{:<24} {:<24} {:<7} {:<20} {}",
            id,
            c.client_name,
            c.origin,
            c.token_endpoint_auth_method,
            c.redirect_uris.join(" ")
        );
    }
    Ok(())
}

async fn registration_token(
    pool: &PgPool,
    expires: &str,
    uses: Option<u32>,
    note: Option<&str>,
) -> Result<(), Failure> {
    let ttl = parse_duration(expires).map_err(|m| usage("--expires", m))?;
    if ttl.is_zero() || ttl > Duration::from_secs(365 * 86400) {
        return Err(usage("--expires", "must be between 1s and 365d"));
    }
    let uses = uses.map(|u| i32::try_from(u).unwrap_or(i32::MAX));
    if uses == Some(0) {
        return Err(usage("--uses", "must be at least 1"));
    }
    if note.is_some_and(|n| n.chars().count() > 200) {
        return Err(usage("--note", "must be at most 200 characters"));
    }
    let token = Secret::generate();
    store::registration_tokens::insert(pool, &token.digest(), note, ttl.as_secs_f64(), uses).await.map_err(db)?;
    admin_event(pool, Event::new("admin.registration_token.created", Outcome::Success).digest(&token.digest())).await?;
    println!("registration_token {}", token.expose());
    eprintln!("Clients send it as `Authorization: Bearer <token>` to /register. It is shown only now.");
    Ok(())
}

async fn remove(pool: &PgPool, client_id: &str) -> Result<(), Failure> {
    if store::clients::delete(pool, client_id).await.map_err(db)? {
        admin_event(pool, Event::new("admin.client.removed", Outcome::Success).client(client_id)).await?;
        println!("removed {client_id}");
        Ok(())
    } else {
        Err(usage("CLIENT_ID", format!("no client {client_id}")))
    }
}
