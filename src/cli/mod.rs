//! The command line: `serve`, `dev`, `migrate` and the admin commands.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (one line naming the
//! setting and what is wrong).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, LogFormat, Sources};
use crate::keys::{KeyError, KeyRing, KeyStatus};
use crate::state::{self, AppState, ServerSettings};
use crate::{server, store, telemetry};

mod admin;
mod dev;

use dev::AdminDb;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: an OAuth 2.1 authorization server for MCP servers and clients",
    long_about = "Tessera: an OAuth 2.1 authorization server for MCP servers and clients.\n\n\
        Configuration comes from environment variables (DATABASE_URL, TESSERA_ISSUER, TESSERA_LISTEN, \
        TESSERA_MASTER_KEY, TESSERA_LOG, TESSERA_LOG_FORMAT, ...), optionally overlaid by a TOML file \
        given with --config. Admin commands use DATABASE_URL, or the `tessera dev` data directory when \
        DATABASE_URL is unset."
)]
pub struct Cli {
    /// TOML file whose settings override the environment (keys: issuer, listen, master_key, ...).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Data directory of `tessera dev` (private PostgreSQL and master key); admin commands use it when DATABASE_URL is unset.
    #[arg(long, global = true, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server for production. Needs DATABASE_URL, TESSERA_ISSUER and TESSERA_MASTER_KEY;
    /// applies pending migrations, then serves on TESSERA_LISTEN until SIGTERM.
    Serve,
    /// Run with no setup: a private PostgreSQL under --data-dir (created on first run, on a Unix
    /// socket only), a generated master key, and the issuer http://localhost:PORT.
    /// With DATABASE_URL set, that database is used instead.
    Dev {
        /// Port to serve on (on localhost).
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    #[command(flatten)]
    Admin(AdminCommand),
}

/// Commands that work on the database (DATABASE_URL, or the `dev` data directory) and exit.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Apply pending database migrations and exit (safe while other instances start).
    Migrate,
    /// Manage the signing keys of access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage resources: the MCP servers Tessera issues tokens for.
    #[command(subcommand)]
    Resource(admin::ResourceCommand),
    /// Manage local user accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage clients registered by the operator.
    #[command(subcommand)]
    Client(admin::ClientCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show recent audit records, oldest first, optionally filtered; --follow keeps printing.
    Tail(admin::AuditTail),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key. It is published in the JWKS at once and starts signing after
    /// --delay (default: the longer of the access-token lifetime and the JWKS cache time);
    /// the previous key stays published until every token it signed has expired.
    Rotate {
        /// Delay before the new key signs, e.g. 10m, 1h, or 0s to sign at once.
        #[arg(long, value_name = "DURATION")]
        delay: Option<String>,
    },
    /// List the signing keys and their status (pending, active, retiring, retired).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Why a command failed: bad configuration (exit 2) or anything else (exit 1).
#[derive(Debug)]
pub enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::WrongMasterKey { kid } => Self::Config(ConfigError::new(
                "TESSERA_MASTER_KEY",
                format!(
                    "does not decrypt signing key {kid} stored in the database (wrong master key for this database?)"
                ),
            )),
            e => Self::Other(e.into()),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tessera: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli));
    drop(runtime);
    telemetry::flush();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("tessera: configuration error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("tessera: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut sources = Sources::from_env()?;
    if let Some(path) = &cli.config {
        sources.overlay_file(path)?;
    }
    Config::from_sources(&sources)
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(&cli)?;
    match &cli.command {
        Command::Serve => serve(config).await,
        Command::Dev { port } => {
            telemetry::init(&config.log, config.log_format.unwrap_or(LogFormat::Pretty));
            dev::run(config, &cli.data_dir, *port).await
        }
        Command::Admin(admin) => {
            init_admin_logging(&config);
            let db = AdminDb::open(&config, &cli.data_dir).await?;
            let result = match admin {
                AdminCommand::Keys(cmd) => keys_command(&config, &db, cmd).await,
                AdminCommand::Resource(cmd) => admin::resource(&db.pool, cmd).await,
                AdminCommand::User(cmd) => admin::user(&db.pool, cmd).await,
                AdminCommand::Client(cmd) => admin::client(&db.pool, cmd).await,
                AdminCommand::Audit(AuditCommand::Tail(args)) => admin::audit_tail(&db.pool, args).await,
                // `AdminDb::open` applied them.
                AdminCommand::Migrate => {
                    println!("migrations applied");
                    Ok(())
                }
            };
            db.close().await;
            result
        }
    }
}

/// Admin commands print their results on stdout; only warnings go to the log (stderr).
fn init_admin_logging(config: &Config) {
    let filter = if config.log == "info" { "warn" } else { config.log.as_str() };
    telemetry::init(filter, config.log_format.unwrap_or(LogFormat::Pretty));
}

async fn serve(config: Config) -> Result<(), Failure> {
    let database_url = config.require_database_url()?.clone();
    let settings =
        ServerSettings::from_config(&config, config.require_issuer()?.clone(), config.require_master_key()?.clone());
    telemetry::init(&config.log, config.log_format.unwrap_or(LogFormat::Json));
    if settings.cimd.allow_loopback {
        tracing::warn!(
            "TESSERA_CIMD_ALLOW_LOOPBACK=true: client metadata documents may be fetched from loopback addresses over http. \
             This is for tests only; never use it in production."
        );
    }
    let options = database_url
        .0
        .parse()
        .map_err(|_| ConfigError::new("DATABASE_URL", "is not a valid PostgreSQL connection URL"))?;
    let pool = dev::connect_with_retry(options, config.db_max_connections).await?;
    store::migrate(&pool).await.map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
    let state = AppState::new(settings, pool).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError::new("TESSERA_LISTEN", format!("cannot listen on {}: {e}", config.listen)))?;
    tracing::info!(issuer = %state.settings.issuer, listen = %config.listen, "tessera is serving");
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        crate::metrics::install();
        crate::metrics::start(&state, addr, shutdown.clone()).await?;
    }
    server::cancel_on_signal(shutdown.clone());
    server::run(state, vec![listener], shutdown).await.map_err(|e| anyhow::anyhow!("serving HTTP: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

async fn keys_command(config: &Config, db: &AdminDb, cmd: &KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Rotate { delay } => {
            let master = match &db.master_key {
                Some(m) => m.clone(),
                None => config.require_master_key()?.clone(),
            };
            let delay = match delay {
                Some(d) => crate::config::parse_duration(d).map_err(|m| ConfigError::new("--delay", m))?,
                None => state::default_rotation_delay(config.access_token_ttl, config.key_rotation_delay),
            };
            // Loading the ring first proves the master key decrypts the keys already stored, so a
            // wrong key can never add a key that the servers could not read.
            KeyRing::load(&db.pool, master.clone(), state::signing_grace(config.access_token_ttl)).await?;
            let new = crate::keys::generate(&master)?;
            let activates_at = chrono::Utc::now()
                + chrono::Duration::from_std(delay).map_err(|_| ConfigError::new("--delay", "is too long"))?;
            let jwk = serde_json::to_value(&new.public_jwk).map_err(anyhow::Error::from)?;
            store::keys::insert(&db.pool, &new.kid, &jwk, &new.private_key_enc, activates_at)
                .await
                .map_err(anyhow::Error::from)?;
            admin::admin_event(
                &db.pool,
                crate::audit::Event::new("admin.keys.rotated", crate::audit::Outcome::Success).detail(new.kid.clone()),
            )
            .await?;
            println!("added signing key {}", new.kid);
            println!(
                "published now; signs from {} (in {})",
                activates_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                crate::config::format_duration(delay)
            );
            Ok(())
        }
        KeysCommand::List { json } => {
            let rows = store::keys::list(&db.pool).await.map_err(anyhow::Error::from)?;
            let grace = state::signing_grace(config.access_token_ttl);
            let activations: Vec<_> = rows.iter().map(|r| r.activates_at).collect();
            let now = chrono::Utc::now();
            let statuses: Vec<KeyStatus> =
                (0..rows.len()).map(|i| crate::keys::status_of(&activations, i, grace, now)).collect();
            if *json {
                let list: Vec<_> = rows
                    .iter()
                    .zip(&statuses)
                    .map(|(row, status)| {
                        serde_json::json!({
                            "kid": row.kid,
                            "alg": "ES256",
                            "status": status.name(),
                            "created_at": row.created_at,
                            "activates_at": row.activates_at,
                            "published_until": status.published_until(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list).map_err(anyhow::Error::from)?);
            } else {
                println!("{:<45} {:<9} {:<21} {:<21}", "KID", "STATUS", "ACTIVATES", "PUBLISHED UNTIL");
                for (row, status) in rows.iter().zip(&statuses) {
                    let until = match status {
                        KeyStatus::Retiring(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        KeyStatus::Retired => "-".into(),
                        _ => "(while current)".into(),
                    };
                    println!(
                        "{:<45} {:<9} {:<21} {:<21}",
                        row.kid,
                        status.name(),
                        row.activates_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        until
                    );
                }
            }
            Ok(())
        }
    }
}
