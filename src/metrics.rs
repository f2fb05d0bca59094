//! Prometheus metrics, served on a separate listener (`TESSERA_METRICS_LISTEN`, off by default)
//! so they are never exposed with the public endpoints.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::AppState;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Whether a recorder is installed (so the hot path does not build labels for nobody).
fn enabled() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// Install the process-wide recorder (once); `None` if another recorder is installed.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("tessera_http_request_duration_seconds".into()),
                    &buckets,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

pub fn request(route: &str, method: &str, status: u16, elapsed: Duration) {
    if !enabled() {
        return;
    }
    let labels = [("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())];
    metrics::counter!("tessera_http_requests_total", &labels).increment(1);
    metrics::histogram!("tessera_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
}

pub fn token_issued(grant_type: &str) {
    if !enabled() {
        return;
    }
    metrics::counter!("tessera_tokens_issued_total", "grant_type" => grant_type.to_owned()).increment(1);
}

pub fn refresh_reuse_detected() {
    metrics::counter!("tessera_refresh_reuse_detected_total").increment(1);
}

pub fn rate_limited(route: &'static str) {
    metrics::counter!("tessera_rate_limited_total", "route" => route).increment(1);
}

pub fn audit_queued(depth: usize) {
    metrics::gauge!("tessera_audit_queue_depth").set(depth as f64);
}

fn pool_gauges(state: &AppState) {
    metrics::gauge!("tessera_db_pool_connections").set(f64::from(state.pool.size()));
    metrics::gauge!("tessera_db_pool_idle_connections").set(state.pool.num_idle() as f64);
    metrics::gauge!("tessera_audit_queue_depth").set(state.audit.depth() as f64);
}

/// Bind the metrics listener (at start, so a bad address fails then) and serve `GET /metrics`
/// on it until `shutdown`.
pub async fn start(
    state: &AppState,
    addr: SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::config::ConfigError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::config::ConfigError::new("TESSERA_METRICS_LISTEN", format!("cannot listen on {addr}: {e}"))
    })?;
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(state, listener, shutdown).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    Ok(())
}

async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let Some(handle) = install() else {
        tracing::warn!("metrics recorder unavailable; /metrics disabled");
        return Ok(());
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            let state = state.clone();
            async move {
                pool_gauges(&state);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
            }
        }),
    );
    tracing::info!(listen = ?listener.local_addr().ok(), "metrics on /metrics");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
