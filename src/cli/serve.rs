//! `tessera serve`: the production server, on the database, issuer and master key it is given.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::dev::connect_with_retry;
use crate::config::{Config, ConfigError, LogFormat};
use crate::platform::telemetry;
use crate::state::{AppState, ServerSettings};
use crate::{server, store};

pub async fn run(config: Config) -> Result<(), Failure> {
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
    let pool = connect_with_retry(options, config.db_max_connections).await?;
    store::migrate(&pool).await.map_err(|e| anyhow::anyhow!("applying migrations: {e}"))?;
    let state = AppState::new(settings, pool).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError::new("TESSERA_LISTEN", format!("cannot listen on {}: {e}", config.listen)))?;
    tracing::info!(issuer = %state.settings.issuer, listen = %config.listen, "tessera is serving");
    let shutdown = CancellationToken::new();
    if let Some(addr) = config.metrics_listen {
        server::start_metrics(&state, addr, shutdown.clone()).await?;
    }
    server::cancel_on_signal(shutdown.clone());
    server::run(state, vec![listener], shutdown).await.map_err(|e| anyhow::anyhow!("serving HTTP: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}
