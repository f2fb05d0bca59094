//! `GET /metrics` (Prometheus) on a listener of its own (`TESSERA_METRICS_LISTEN`, off by
//! default), so metrics are never exposed with the public endpoints.

use std::net::SocketAddr;

use axum::http::header;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::platform::audit::AuditSink;

/// Bind the metrics listener (at start, so a bad address fails then) and serve `GET /metrics`
/// on it until `shutdown`. Pool and audit-queue gauges are read at each scrape.
pub async fn start(
    pool: Option<sqlx::PgPool>,
    audit: AuditSink,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ConfigError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::new("TESSERA_METRICS_LISTEN", format!("cannot listen on {addr}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = serve(pool, audit, listener, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

async fn serve(
    pool: Option<sqlx::PgPool>,
    audit: AuditSink,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Some(handle) = crate::platform::metrics::install() else {
        tracing::warn!("metrics recorder unavailable; /metrics disabled");
        return Ok(());
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            crate::platform::metrics::pool_gauges(pool.as_ref(), audit.depth());
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
        }),
    );
    tracing::info!(listen = ?listener.local_addr().ok(), "metrics on /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
