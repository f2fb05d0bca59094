//! Admin commands: `resource`, `user` and `client`. They print results on standard output and
//! announce changes to running instances through PostgreSQL notifications.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::time::Duration;

use clap::Subcommand;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{Event, Outcome};
use crate::cli::Failure;
use crate::config::{ConfigError, format_duration, parse_duration};
use crate::oauth::secret::{self, Secret};
use crate::oauth::{redirect_uri, resource, scope};
use crate::store::{self, clients::Client, resources::Resource};

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
    /// Remove a resource; every grant and token for it stops working.
    Remove { uri: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local account. The password is read from a prompt, or from standard input with --password-stdin.
    Add {
        username: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
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
    /// List the accounts.
    List,
}

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

/// Record an admin action in the audit log (synchronously: the command waits for it).
pub async fn admin_event(pool: &PgPool, event: Event) -> Result<(), Failure> {
    let event = event.detail_default("cli");
    event.log_now();
    store::audit::insert(pool, &[event]).await.map_err(db)
}

fn usage(key: &str, message: impl Into<String>) -> Failure {
    ConfigError::new(key, message).into()
}

fn db(e: sqlx::Error) -> Failure {
    Failure::Other(e.into())
}

pub async fn resource(pool: &PgPool, cmd: &ResourceCommand) -> Result<(), Failure> {
    match cmd {
        ResourceCommand::Add { uri, name, scopes, default_scopes, token_ttl, default } => {
            let uri = resource::canonicalize(uri).map_err(|m| usage("URI", format!("resource URI {m}")))?;
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(usage("--name", "must be 1 to 200 characters"));
            }
            let mut scope_map = BTreeMap::new();
            for item in scopes {
                let (scope_name, description) = item.split_once('=').unwrap_or((item.as_str(), item.as_str()));
                if !scope::is_valid_name(scope_name) || scope_name == scope::OFFLINE_ACCESS {
                    return Err(usage("--scope", format!("{scope_name:?} is not a valid scope name")));
                }
                if description.trim().is_empty() || description.chars().count() > 300 {
                    return Err(usage(
                        "--scope",
                        format!("the description of {scope_name} must be 1 to 300 characters"),
                    ));
                }
                scope_map.insert(scope_name.to_owned(), description.trim().to_owned());
            }
            let mut defaults = default_scopes.clone();
            defaults.sort();
            defaults.dedup();
            if let Some(unknown) = defaults.iter().find(|d| !scope_map.contains_key(*d)) {
                return Err(usage("--default-scope", format!("{unknown} is not one of the --scope values")));
            }
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
                is_default: *default,
                credential_id: Some(new_credential_id()),
                credential_secret_hash: Some(secret.digest().to_vec()),
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
        ResourceCommand::List => {
            let list = store::resources::list(pool).await.map_err(db)?;
            println!("{:<44} {:<24} {:<6} {:<8} SCOPES", "URI", "NAME", "TTL", "DEFAULT");
            for r in list {
                let scopes: Vec<String> = r
                    .scopes
                    .keys()
                    .map(|s| if r.default_scopes.contains(s) { format!("{s}*") } else { s.clone() })
                    .collect();
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
        ResourceCommand::Credentials { uri, rotate } => {
            let canonical = resource::canonicalize(uri).map_err(|m| usage("URI", format!("resource URI {m}")))?;
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
            admin_event(pool, Event::new("admin.resource.credentials_rotated", Outcome::Success).resource(&canonical))
                .await?;
            print_credentials(&id, &secret);
            Ok(())
        }
        ResourceCommand::Remove { uri } => {
            let canonical = resource::canonicalize(uri).map_err(|m| usage("URI", format!("resource URI {m}")))?;
            if store::resources::remove(pool, &canonical).await.map_err(db)? {
                admin_event(pool, Event::new("admin.resource.removed", Outcome::Success).resource(&canonical)).await?;
                println!("removed {canonical}");
                Ok(())
            } else {
                Err(usage("URI", format!("{canonical} is not registered")))
            }
        }
    }
}

/// Usernames: 1 to 64 of letters, digits and `. _ @ + -`.
fn check_username(username: &str) -> Result<(), Failure> {
    let ok = (1..=64).contains(&username.len())
        && username.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'));
    if ok { Ok(()) } else { Err(usage("USERNAME", "must be 1 to 64 letters, digits or . _ @ + -")) }
}

fn read_password(from_stdin: bool) -> Result<String, Failure> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| Failure::Other(e.into()))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
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
    crate::password::check_policy(&password).map_err(|e| usage("password", e.to_string()))?;
    Ok(password)
}

async fn hash(password: String) -> Result<String, Failure> {
    tokio::task::spawn_blocking(move || crate::password::hash_blocking(&password))
        .await
        .map_err(|e| Failure::Other(e.into()))?
        .map_err(|e| Failure::Other(e.into()))
}

pub async fn user(pool: &PgPool, cmd: &UserCommand) -> Result<(), Failure> {
    match cmd {
        UserCommand::Add { username, email, password_stdin } => {
            check_username(username)?;
            if let Some(email) = email
                && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
            {
                return Err(usage("--email", "is not an email address"));
            }
            let hashed = hash(read_password(*password_stdin)?).await?;
            let id = Uuid::new_v4();
            if !store::users::insert(pool, id, username, email.as_deref(), &hashed).await.map_err(db)? {
                return Err(usage("USERNAME", format!("{username} already exists")));
            }
            admin_event(pool, Event::new("admin.user.added", Outcome::Success).subject(id.to_string())).await?;
            println!("user {id}");
            Ok(())
        }
        UserCommand::Passwd { username, password_stdin, keep_grants } => {
            let hashed = hash(read_password(*password_stdin)?).await?;
            let (id, evicted) = store::users::set_password(pool, username, &hashed, *keep_grants)
                .await
                .map_err(db)?
                .ok_or_else(|| usage("USERNAME", format!("no user {username}")))?;
            let grants =
                if *keep_grants { "grants kept".to_owned() } else { format!("{} grants revoked", evicted.grants) };
            let detail = format!("{username}: {} sessions ended, {grants}", evicted.sessions);
            let event = Event::new("admin.user.password_changed", Outcome::Success).subject(id.to_string());
            admin_event(pool, event.detail(detail.clone())).await?;
            println!("password changed for {detail}");
            Ok(())
        }
        UserCommand::Disable { username } | UserCommand::Enable { username } => {
            let disable = matches!(cmd, UserCommand::Disable { .. });
            let evicted = store::users::set_disabled(pool, username, disable)
                .await
                .map_err(db)?
                .ok_or_else(|| usage("USERNAME", format!("no user {username}")))?;
            let (event, detail) = if disable {
                let ended = format!("{} sessions ended, {} grants revoked", evicted.sessions, evicted.grants);
                ("admin.user.disabled", format!("{username}: {ended}"))
            } else {
                ("admin.user.enabled", username.clone())
            };
            admin_event(pool, Event::new(event, Outcome::Success).detail(detail.clone())).await?;
            println!("{} {detail}", if disable { "disabled" } else { "enabled" });
            Ok(())
        }
        UserCommand::Revoke { username, client } => {
            let user = store::users::by_username(pool, username)
                .await
                .map_err(db)?
                .ok_or_else(|| usage("USERNAME", format!("no user {username}")))?;
            let (consents, grants) =
                store::grants::revoke_consent(pool, user.id, client.as_deref()).await.map_err(db)?;
            let mut event = Event::new("consent.revoked", Outcome::Success)
                .subject(user.id.to_string())
                .detail(format!("{consents} approvals, {grants} grants"));
            if let Some(client) = client {
                event = event.client(client.clone());
            }
            admin_event(pool, event).await?;
            println!("withdrew {consents} approval(s) and revoked {grants} grant(s) of {username}");
            Ok(())
        }
        UserCommand::List => {
            println!("{:<36} {:<24} {:<9} EMAIL", "ID", "USERNAME", "STATUS");
            for u in store::users::list(pool).await.map_err(db)? {
                println!(
                    "{:<36} {:<24} {:<9} {}",
                    u.id,
                    u.username,
                    if u.disabled { "disabled" } else { "active" },
                    u.email.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

pub async fn client(pool: &PgPool, cmd: &ClientCommand) -> Result<(), Failure> {
    match cmd {
        ClientCommand::Add { name, redirect_uris, confidential, grants, resources } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 200 {
                return Err(usage("--name", "must be 1 to 200 characters"));
            }
            for uri in redirect_uris {
                redirect_uri::validate(uri).map_err(|m| usage("--redirect-uri", format!("{uri}: {m}")))?;
            }
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
            let known = store::resources::list(pool).await.map_err(db)?;
            let mut allowed = Vec::new();
            for uri in resources {
                let canonical = resource::canonicalize(uri).map_err(|m| usage("--resource", format!("{uri}: {m}")))?;
                let found = known.iter().find(|r| r.uri == canonical).ok_or_else(|| {
                    usage("--resource", format!("{canonical} is not registered (tessera resource add)"))
                })?;
                allowed.push(found.id);
            }
            let secret = confidential.then(Secret::generate);
            let mut client = Client::new(secret::new_client_id(), name.to_owned(), "admin");
            if *confidential {
                client.token_endpoint_auth_method = "client_secret_basic".into();
            }
            client.secret_hash = secret.as_ref().map(|s| s.digest().to_vec());
            client.redirect_uris = redirect_uris.clone();
            client.grant_types = grant_types;
            client.allowed_resources = allowed;
            store::clients::insert(pool, &client).await.map_err(db)?;
            admin_event(pool, Event::new("admin.client.added", Outcome::Success).client(&client.client_id)).await?;
            println!("client_id     {}", client.client_id);
            if let Some(secret) = secret {
                println!("client_secret {}", secret.expose());
                eprintln!("The secret is shown only now; store it safely.");
            }
            Ok(())
        }
        ClientCommand::List => {
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
        ClientCommand::RegistrationToken { expires, uses, note } => {
            let ttl = parse_duration(expires).map_err(|m| usage("--expires", m))?;
            if ttl.is_zero() || ttl > Duration::from_secs(365 * 86400) {
                return Err(usage("--expires", "must be between 1s and 365d"));
            }
            let uses = uses.map(|u| i32::try_from(u).unwrap_or(i32::MAX));
            if uses == Some(0) {
                return Err(usage("--uses", "must be at least 1"));
            }
            if note.as_ref().is_some_and(|n| n.chars().count() > 200) {
                return Err(usage("--note", "must be at most 200 characters"));
            }
            let token = Secret::generate();
            store::registration_tokens::insert(pool, &token.digest(), note.as_deref(), ttl.as_secs_f64(), uses)
                .await
                .map_err(db)?;
            admin_event(pool, Event::new("admin.registration_token.created", Outcome::Success).digest(&token.digest()))
                .await?;
            println!("registration_token {}", token.expose());
            eprintln!("Clients send it as `Authorization: Bearer <token>` to /register. It is shown only now.");
            Ok(())
        }
        ClientCommand::Remove { client_id } => {
            if store::clients::delete(pool, client_id).await.map_err(db)? {
                admin_event(pool, Event::new("admin.client.removed", Outcome::Success).client(client_id.clone()))
                    .await?;
                println!("removed {client_id}");
                Ok(())
            } else {
                Err(usage("CLIENT_ID", format!("no client {client_id}")))
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct AuditTail {
    /// Keep printing new records as they are stored (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
    /// Only records about this client.
    #[arg(long = "client", allow_hyphen_values = true)]
    client: Option<String>,
    /// Only records about this subject (a user id, or a client id for client_credentials).
    #[arg(long)]
    subject: Option<String>,
    /// Only this event, or a family of events (`login` matches `login.failure`, ...).
    #[arg(long)]
    event: Option<String>,
    /// Only records since this time: RFC 3339 (`2026-01-31T12:00:00Z`) or a duration ago (`1h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// How many recent records to show first.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn print_audit_row(row: &store::audit::Row, json: bool) {
    if json {
        println!("{}", serde_json::to_string(row).unwrap_or_default());
        return;
    }
    let mut line = format!(
        "{}  {:<28} {:<12}",
        row.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row.event,
        row.outcome
    );
    let fields = [
        ("client", &row.client_id),
        ("subject", &row.subject),
        ("resource", &row.resource),
        ("scopes", &row.scopes),
        ("source", &row.source),
        ("request", &row.request_id),
        ("digest", &row.digest),
        ("detail", &row.detail),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            if v.contains(' ') {
                line.push_str(&format!(" {name}={v:?}"));
            } else {
                line.push_str(&format!(" {name}={v}"));
            }
        }
    }
    println!("{line}");
}

pub async fn audit_tail(pool: &PgPool, args: &AuditTail) -> Result<(), Failure> {
    let since = match &args.since {
        None => None,
        Some(s) => Some(match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&chrono::Utc),
            Err(_) => {
                let ago = parse_duration(s).map_err(|m| usage("--since", format!("{m}; or an RFC 3339 time")))?;
                chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|_| usage("--since", "is too long"))?
            }
        }),
    };
    if !(1..=100_000).contains(&args.limit) {
        return Err(usage("--limit", "must be between 1 and 100000"));
    }
    let mut filter = store::audit::Filter {
        client_id: args.client.clone(),
        subject: args.subject.clone(),
        event: args.event.clone(),
        since,
        after_id: None,
    };
    let rows = store::audit::list(pool, &filter, args.limit).await.map_err(db)?;
    for row in &rows {
        print_audit_row(row, args.json);
    }
    if !args.follow {
        return Ok(());
    }
    filter.after_id = Some(rows.last().map_or(0, |r| r.id));
    if rows.is_empty() {
        filter.after_id =
            sqlx::query_scalar!("SELECT max(id) FROM audit_events").fetch_one(pool).await.map_err(db)?.or(Some(0));
    }
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let rows = store::audit::list(pool, &filter, 10_000).await.map_err(db)?;
        for row in &rows {
            print_audit_row(row, args.json);
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if let Some(last) = rows.last() {
            filter.after_id = Some(last.id);
        }
    }
}
