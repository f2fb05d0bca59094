//! Prometheus metrics: the process-wide recorder and the counters Tessera keeps. Recording is
//! a no-op until [`install`] runs; `http::metrics` serves them on their own listener.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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

/// A tool call through the gateway: by policy rule (a bounded label) and outcome, with the
/// upstream's latency.
pub fn gateway_call(rule: &str, outcome: &'static str, latency: Duration) {
    if !enabled() {
        return;
    }
    let labels = [("rule", rule.to_owned()), ("outcome", outcome.to_owned())];
    metrics::counter!("tessera_gateway_calls_total", &labels).increment(1);
    metrics::histogram!("tessera_gateway_upstream_seconds", &labels[..1]).record(latency.as_secs_f64());
}

/// A request the gateway refused, by reason.
pub fn gateway_refused(reason: &'static str) {
    if !enabled() {
        return;
    }
    metrics::counter!("tessera_gateway_refusals_total", "reason" => reason).increment(1);
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

/// Database pool and audit queue gauges, set just before each scrape.
pub fn pool_gauges(pool: Option<&sqlx::PgPool>, audit_depth: usize) {
    if let Some(pool) = pool {
        metrics::gauge!("tessera_db_pool_connections").set(f64::from(pool.size()));
        metrics::gauge!("tessera_db_pool_idle_connections").set(pool.num_idle() as f64);
    }
    metrics::gauge!("tessera_audit_queue_depth").set(audit_depth as f64);
}
