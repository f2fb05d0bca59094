//! The `tessera` command line: the clap tree, dispatch to each command, and exit codes.
//! The top layer: it may import any module of the crate; nothing but `main.rs` imports it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, Sources};
use crate::platform::telemetry;
use crate::tokens::keys::KeyError;

mod admin;
mod dev;
mod gateway;
mod keys;
mod serve;

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
    /// Protect an unmodified MCP server: a reverse proxy that checks tokens (audience, per-tool
    /// scopes), applies rate limits, audits every tool call, and streams the answers back.
    Gateway(gateway::GatewayArgs),
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
    Keys(keys::KeysCommand),
    /// Manage resources: the MCP servers Tessera issues tokens for.
    #[command(subcommand)]
    Resource(admin::resource::ResourceCommand),
    /// Manage local user accounts.
    #[command(subcommand)]
    User(admin::user::UserCommand),
    /// Manage clients registered by the operator.
    #[command(subcommand)]
    Client(admin::client::ClientCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(admin::audit::AuditCommand),
    /// Manage the identity providers people may sign in through (OpenID Connect, Google, Entra, GitHub).
    #[command(subcommand)]
    Upstream(admin::upstream::UpstreamCommand),
    /// Run the database clean-up once now and print what it deleted and what it left (instances
    /// run it every ten minutes, one at a time).
    Prune(admin::prune::PruneArgs),
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

/// Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage (one line naming the
/// setting and what is wrong).
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

/// The environment, overlaid by the `--config` file, overlaid by a command's own flags.
fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut sources = Sources::from_env()?;
    if let Some(path) = &cli.config {
        sources.overlay_file(path)?;
    }
    if let Command::Gateway(args) = &cli.command {
        for (env, value) in args.overrides() {
            sources.set(env, value);
        }
    }
    Config::from_sources(&sources)
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let config = load_config(&cli)?;
    match &cli.command {
        Command::Serve => serve::run(config).await,
        Command::Dev { port } => {
            telemetry::init(&config.log, config.log_format.unwrap_or(LogFormat::Pretty));
            dev::run(config, &cli.data_dir, *port).await
        }
        Command::Gateway(_) => gateway::run(config).await,
        Command::Admin(cmd) => run_admin(&config, &cli.data_dir, cmd).await,
    }
}

/// Run one admin command on the database, which is closed (and a private cluster stopped) after.
async fn run_admin(config: &Config, data_dir: &Path, cmd: &AdminCommand) -> Result<(), Failure> {
    init_admin_logging(config);
    let db = dev::AdminDb::open(config, data_dir).await?;
    let result = match cmd {
        AdminCommand::Keys(cmd) => keys::run(config, &db, cmd).await,
        AdminCommand::Resource(cmd) => admin::resource::run(&db.pool, cmd).await,
        AdminCommand::User(cmd) => admin::user::run(&db.pool, cmd).await,
        AdminCommand::Client(cmd) => admin::client::run(&db.pool, cmd).await,
        AdminCommand::Audit(cmd) => admin::audit::run(&db.pool, cmd).await,
        AdminCommand::Upstream(cmd) => admin::upstream::run(config, db.master_key.as_ref(), &db.pool, cmd).await,
        AdminCommand::Prune(args) => admin::prune::run(config, &db.pool, args).await,
        // `AdminDb::open` applied them.
        AdminCommand::Migrate => {
            println!("migrations applied");
            Ok(())
        }
    };
    db.close().await;
    result
}

/// Admin commands print their results on stdout; only warnings go to the log (stderr).
fn init_admin_logging(config: &Config) {
    let filter = if config.log == "info" { "warn" } else { config.log.as_str() };
    telemetry::init(filter, config.log_format.unwrap_or(LogFormat::Pretty));
}
