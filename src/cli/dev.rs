//! `tessera dev` — the zero-setup path — and the database that admin commands use.
//!
//! Without `DATABASE_URL`, the data directory (default `./data`) holds a private PostgreSQL
//! cluster (`pg/`, its log `postgres.log`) and the master key (`master.key`); both are created on
//! first run and reused afterwards.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::Failure;
use crate::config::{Config, ConfigError, Issuer, MasterKey};
use crate::platform::pgcluster::{self, Cluster, Durability};
use crate::state::{AppState, ServerSettings};
use crate::{server, store};

/// The database inside the private cluster.
const DEV_DATABASE: &str = "tessera";
const MASTER_KEY_FILE: &str = "master.key";

/// A database for the dev server or an admin command, with the private cluster if we started it.
pub struct AdminDb {
    pub pool: PgPool,
    /// The master key kept in the data dir, when the private cluster is used.
    pub master_key: Option<MasterKey>,
    cluster: Option<Cluster>,
}

impl AdminDb {
    /// `DATABASE_URL` if set; otherwise the private cluster in `data_dir`, which must exist
    /// (only `dev` creates one). Migrations are applied either way.
    pub async fn open(config: &Config, data_dir: &Path) -> Result<Self, Failure> {
        if let Some(url) = &config.database_url {
            let options: PgConnectOptions = url
                .0
                .parse()
                .map_err(|_| ConfigError::new("DATABASE_URL", "is not a valid PostgreSQL connection URL"))?;
            let pool = store::connect(options, 4).await.context("connecting to DATABASE_URL")?;
            store::migrate(&pool).await.context("applying migrations")?;
            return Ok(Self { pool, master_key: None, cluster: None });
        }
        if !data_dir.join("pg").join("PG_VERSION").exists() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                format!(
                    "is not set and {} holds no `tessera dev` database; set DATABASE_URL, or run this from the directory where you ran `tessera dev` (or pass --data-dir)",
                    data_dir.display()
                ),
            )
            .into());
        }
        Self::open_private(data_dir, false).await
    }

    /// Start (or attach to) the private cluster in `data_dir`, creating it when `create` is set.
    async fn open_private(data_dir: &Path, create: bool) -> Result<Self, Failure> {
        let master_key = Some(master_key_file(data_dir, create)?);
        let pg_dir = data_dir.join("pg");
        let log = data_dir.join("postgres.log");
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(&pg_dir, &log, Durability { durable: true }))
            .await
            .context("starting PostgreSQL")?
            .map_err(anyhow::Error::from)?;
        let db = async {
            let admin = store::connect(cluster.connect_options("postgres"), 1).await?;
            pgcluster::ensure_database(&admin, DEV_DATABASE).await?;
            admin.close().await;
            store::connect(cluster.connect_options(DEV_DATABASE), 16).await
        }
        .await;
        let pool = match db {
            Ok(pool) => pool,
            Err(e) => {
                stop_cluster(Some(cluster)).await;
                return Err(anyhow::Error::from(e).context("connecting to the private PostgreSQL").into());
            }
        };
        let mut me = Self { pool, master_key, cluster: Some(cluster) };
        if let Err(e) = store::migrate(&me.pool).await {
            me.close_ref().await;
            return Err(anyhow::anyhow!("applying migrations: {e}").into());
        }
        Ok(me)
    }

    async fn close_ref(&mut self) {
        self.pool.close().await;
        stop_cluster(self.cluster.take()).await;
    }

    /// Close the pool, then stop the private cluster if this process started it.
    pub async fn close(mut self) {
        self.close_ref().await;
    }
}

async fn stop_cluster(cluster: Option<Cluster>) {
    if let Some(cluster) = cluster
        && cluster.owned()
    {
        match tokio::task::spawn_blocking(move || cluster.stop()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "stopping PostgreSQL"),
            Err(e) => tracing::error!(error = %e, "stopping PostgreSQL"),
        }
    }
}

/// Read the data dir's master key, or create it (0600) when `create` is set.
fn master_key_file(data_dir: &Path, create: bool) -> Result<MasterKey, Failure> {
    let path = data_dir.join(MASTER_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_base64(&text)
            .map_err(|m| ConfigError::new("TESSERA_MASTER_KEY", format!("{} {m}", path.display())).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let key = MasterKey::generate();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(file, "{}", key.to_base64()).with_context(|| format!("writing {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("reading {}", path.display())).into()),
    }
}

/// Connect to a production database, retrying for half a minute while it starts up.
pub async fn connect_with_retry(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, Failure> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store::connect(options.clone(), max_connections).await {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context("connecting to DATABASE_URL").into());
            }
        }
    }
}

/// The command a user types to run Tessera: `cargo run --release --` under cargo, else `tessera`.
fn self_command() -> &'static str {
    if std::env::var_os("CARGO").is_some() { "cargo run --release --" } else { "tessera" }
}

pub async fn run(config: Config, data_dir: &Path, port: u16) -> Result<(), Failure> {
    let issuer = match &config.issuer {
        Some(issuer) => issuer.clone(),
        None => Issuer::parse(&format!("http://localhost:{port}")).map_err(|m| ConfigError::new("--port", m))?,
    };
    // Bind first: a port in use should fail before a database is started.
    let listeners = bind_localhost(port).await?;

    let db = if config.database_url.is_some() {
        let mut db = AdminDb::open(&config, data_dir).await?;
        if config.master_key.is_none() {
            db.master_key = Some(master_key_file(data_dir, true)?);
        }
        db
    } else {
        AdminDb::open_private(data_dir, true).await?
    };
    let master_key = match config.master_key.clone().or_else(|| db.master_key.clone()) {
        Some(key) => key,
        None => config.require_master_key()?.clone(),
    };
    let mut settings = ServerSettings::from_config(&config, issuer.clone(), master_key);
    // A developer runs clients on this machine: let metadata documents come from localhost too,
    // unless the setting says otherwise.
    if config.cimd_allow_loopback.is_none() {
        settings.cimd.allow_loopback = true;
    }
    if settings.cimd.allow_loopback {
        tracing::warn!(
            "TESSERA_CIMD_ALLOW_LOOPBACK is on: client metadata documents may be fetched from loopback over http (development and tests only)"
        );
    }
    let state = match AppState::new(settings, db.pool.clone()).await {
        Ok(state) => state,
        Err(e) => {
            db.close().await;
            return Err(e.into());
        }
    };
    print_banner(&issuer, data_dir, config.database_url.is_some());

    let shutdown = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        server::start_metrics(&state, addr, shutdown.clone()).await?;
    }
    server::cancel_on_signal(shutdown.clone());
    let served = server::run(state, listeners, shutdown).await;
    tracing::info!("Tessera stopped; stopping PostgreSQL");
    db.close().await;
    served.map_err(|e| anyhow::anyhow!("serving HTTP: {e}"))?;
    Ok(())
}

/// Listen on 127.0.0.1 and, where the machine has IPv6, on [::1]: browsers resolve
/// `localhost` to either.
async fn bind_localhost(port: u16) -> Result<Vec<TcpListener>, Failure> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let first =
        TcpListener::bind(v4).await.map_err(|e| ConfigError::new("--port", format!("cannot listen on {v4}: {e}")))?;
    let mut listeners = vec![first];
    if let Ok(v6) = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await {
        listeners.push(v6);
    }
    Ok(listeners)
}

fn print_banner(issuer: &Issuer, data_dir: &Path, external_db: bool) {
    let me = self_command();
    let data: PathBuf = data_dir.to_path_buf();
    let storage = if external_db {
        "the database at DATABASE_URL".to_owned()
    } else {
        format!("a private PostgreSQL in {}", data.join("pg").display())
    };
    println!(
        "\nTessera is running in development mode.\n\n  \
         issuer    {issuer}\n  \
         metadata  {metadata}\n  \
         jwks      {jwks}\n  \
         data      {storage}; master key in {key}\n\n\
         Next, in another terminal from this directory:\n  \
         {me} resource add http://localhost:3000/mcp --name \"My MCP server\" --scope tools=\"Use the tools\" --default\n  \
         {me} user add alice\n  \
         {me} client add --name \"My app\" --redirect-uri http://127.0.0.1/callback\n  \
         curl {metadata}\n\n\
         Press Ctrl-C to stop (PostgreSQL stops with it).\n",
        metadata = issuer.join("/.well-known/oauth-authorization-server"),
        jwks = issuer.join("/jwks.json"),
        key = data.join(MASTER_KEY_FILE).display(),
    );
}
