//! `tessera gateway`: protect an unmodified MCP server. Flags override the `TESSERA_GATEWAY_*`
//! variables and the `--config` file; the introspection secret comes only from the environment or
//! the file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::dev::connect_with_retry;
use crate::config::{self, Config, ConfigError, LogFormat, VerifyMode};
use crate::gateway::policy::Policy;
use crate::gateway::verifier::{Introspector, IssuerKeys, Verifier};
use crate::gateway::{self, Gateway, Settings};
use crate::platform::audit::AuditSink;
use crate::platform::telemetry;
use crate::server;

/// How long streams may go on after SIGTERM before the gateway closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// The MCP server to protect, an http URL (the gateway runs beside it), e.g. http://127.0.0.1:3001/mcp.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// The resource's canonical URI: where clients reach the gateway, and the tokens' audience.
    #[arg(long, value_name = "URI")]
    resource: Option<String>,
    /// The authorization server (Tessera's issuer) whose tokens are accepted.
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Address and port to listen on (default 127.0.0.1:8443).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Policy file: per-tool scopes and rates (see the README).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// jwks (default) or introspect (TESSERA_GATEWAY_CLIENT_ID and _CLIENT_SECRET then needed).
    #[arg(long, value_name = "MODE")]
    verify: Option<String>,
}

impl GatewayArgs {
    /// The flags given, as settings that override the environment and the file.
    pub fn overrides(&self) -> Vec<(&'static str, String)> {
        let flags = [
            (config::TESSERA_GATEWAY_UPSTREAM.env, self.upstream.clone()),
            (config::TESSERA_GATEWAY_RESOURCE.env, self.resource.clone()),
            (config::TESSERA_GATEWAY_ISSUER.env, self.issuer.clone()),
            (config::TESSERA_GATEWAY_LISTEN.env, self.listen.clone()),
            (config::TESSERA_GATEWAY_POLICY.env, self.policy.as_ref().map(|p| p.display().to_string())),
            (config::TESSERA_GATEWAY_VERIFY.env, self.verify.clone()),
        ];
        flags.into_iter().filter_map(|(env, value)| Some((env, value?))).collect()
    }
}

fn required<T: Clone>(value: &Option<T>, env: &str, example: &str) -> Result<T, ConfigError> {
    value.clone().ok_or_else(|| ConfigError::new(env, format!("is required ({example})")))
}

pub async fn run(config: Config) -> Result<(), Failure> {
    telemetry::init(&config.log, config.log_format.unwrap_or(LogFormat::Json));
    let g = &config.gateway;
    let upstream = required(&g.upstream, "TESSERA_GATEWAY_UPSTREAM", "--upstream http://127.0.0.1:3001/mcp")?;
    let resource = required(&g.resource, "TESSERA_GATEWAY_RESOURCE", "--resource https://mcp.example.com/mcp")?;
    let issuer = required(&g.issuer, "TESSERA_GATEWAY_ISSUER", "--issuer https://auth.example.com")?;
    let policy = match &g.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("TESSERA_GATEWAY_POLICY", format!("cannot read {}: {e}", path.display()))
            })?;
            Policy::from_toml(&text)
                .map_err(|e| ConfigError::new("TESSERA_GATEWAY_POLICY", format!("{}: {e}", path.display())))?
        }
        None => Policy::open(),
    };
    let shutdown = CancellationToken::new();
    let verifier = verifier(&config, issuer.as_str(), &shutdown).await?;
    let pool = match &config.database_url {
        Some(url) => {
            let options =
                url.0.parse().map_err(|_| ConfigError::new("DATABASE_URL", "is not a valid PostgreSQL URL"))?;
            Some(connect_with_retry(options, 4).await?)
        }
        None => None,
    };
    let audit = pool.clone().map_or_else(AuditSink::log_only, AuditSink::start);
    let settings = Settings {
        upstream,
        resource,
        issuer: issuer.as_str().to_owned(),
        allowed_origins: g.allowed_origins.clone(),
        identity_headers: g
            .identity_headers
            .iter()
            .filter_map(|(field, name)| Some((*field, HeaderName::from_bytes(name.as_bytes()).ok()?)))
            .collect(),
        trusted_proxies: config.trusted_proxies.clone(),
    };
    let gateway = Arc::new(Gateway::new(settings, policy, verifier, audit.clone()));
    let listener = TcpListener::bind(g.listen)
        .await
        .map_err(|e| ConfigError::new("TESSERA_GATEWAY_LISTEN", format!("cannot listen on {}: {e}", g.listen)))?;
    if let Some(addr) = config.metrics_listen {
        crate::platform::metrics::install();
        crate::web::metrics::start(pool, audit.clone(), addr, shutdown.clone()).await?;
    }
    tracing::info!(gateway = %gateway::describe(g.listen, &gateway), "tessera gateway is serving");
    server::cancel_on_signal(shutdown.clone());
    gateway::serve(gateway, listener, shutdown, SHUTDOWN_GRACE).await.map_err(|e| anyhow::anyhow!("serving: {e}"))?;
    audit.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// JWKS: load the keys now (a failure is logged and retried; /readyz says so) and keep them
/// fresh. Introspection: find the endpoint now.
async fn verifier(config: &Config, issuer: &str, shutdown: &CancellationToken) -> Result<Verifier, Failure> {
    let g = &config.gateway;
    match g.verify {
        VerifyMode::Jwks => {
            let keys = IssuerKeys::new(issuer);
            tokio::spawn(keys.clone().keep_fresh(shutdown.clone()));
            Ok(Verifier::Jwks(keys))
        }
        VerifyMode::Introspect => {
            let id =
                required(&g.client_id, "TESSERA_GATEWAY_CLIENT_ID", "the rs_... id `tessera resource add` printed")?;
            let secret = required(&g.client_secret, "TESSERA_GATEWAY_CLIENT_SECRET", "the secret printed with it")?;
            let introspector = Introspector::discover(issuer, &id, &secret.0)
                .await
                .map_err(|e| anyhow::anyhow!("finding the issuer's introspection endpoint: {e}"))?;
            Ok(Verifier::Introspection(introspector))
        }
    }
}
