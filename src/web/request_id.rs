//! A request id on every request, and one span per request that every log line inside carries.
//!
//! An incoming `X-Request-Id` is kept when it is a short token of safe characters (a proxy's id
//! links our logs to its own); anything else is replaced, so a client cannot inject text into
//! the logs. The span names the matched route, never the raw path or query, which may hold codes.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use super::client_addr::{self, ClientAddr};
use crate::platform::audit::RequestMeta;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The request id and source address, for audit records.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ClientAddr(source) = ClientAddr::from_request_parts(parts, state).await?;
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        Ok(Self { request_id, source })
    }
}

fn is_safe(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// What the middleware needs.
#[derive(Clone)]
pub struct Logging {
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: std::sync::Arc<[ipnet::IpNet]>,
    /// Successful requests of every route are routine (the gateway, whose audit line says it all).
    pub quiet_success: bool,
    /// One in this many token, introspection, revocation and userinfo requests is logged at
    /// info even when it succeeds (`TESSERA_ACCESS_LOG_SAMPLE`; 0: none).
    pub sample: u32,
    /// Counts those requests, for the sampling.
    pub api_requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Logging {
    pub fn new(trusted_proxies: &[ipnet::IpNet], quiet_success: bool, sample: u32) -> Self {
        Self { trusted_proxies: trusted_proxies.into(), quiet_success, sample, api_requests: Default::default() }
    }

    /// Whether a request to `route` that succeeds is logged at debug only.
    fn routine(&self, route: &str) -> bool {
        if self.quiet_success || is_routine(route) {
            return true;
        }
        if !is_api(route) {
            return false;
        }
        let n = self.api_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sample == 0 || n % u64::from(self.sample) != 0
    }
}

/// Middleware: the request id, the client address (behind trusted proxies), the request span
/// and the access log line, in one place.
pub async fn layer(State(logging): State<Logging>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_safe(v))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    let source = client_addr::resolve(client_addr::peer(req.extensions()), req.headers(), &logging.trusted_proxies);
    req.extensions_mut().insert(ClientAddr(source));
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route_name = route.as_ref().map_or("(unmatched)", MatchedPath::as_str);
    let method = req.method().clone();
    req.extensions_mut().insert(RequestId(id.clone()));
    let routine = logging.routine(route_name);
    let started = Instant::now();
    // Routine fetches log nothing at info, so they skip the span (the costliest part).
    let (mut res, span) = if routine && !tracing::enabled!(tracing::Level::DEBUG) {
        (next.run(req).await, None)
    } else {
        let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route_name);
        (next.run(req).instrument(span.clone()).await, Some(span))
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    let status = res.status().as_u16();
    crate::platform::metrics::request(route_name, method.as_str(), status, started.elapsed());
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    match span {
        Some(span) => span.in_scope(|| {
            if status >= 500 {
                tracing::error!(status, elapsed_ms, "request failed");
            } else if status < 400 && routine {
                tracing::debug!(status, elapsed_ms, "request");
            } else {
                tracing::info!(status, elapsed_ms, "request");
            }
        }),
        // (A 503 from /readyz is a state, not a failure: it stays at info.)
        None if status >= 500 && is_api(route_name) => {
            tracing::error!(request_id = %id, method = %method, route = route_name, status, elapsed_ms, "request failed");
        }
        None if status >= 400 => {
            tracing::info!(request_id = %id, method = %method, route = route_name, status, elapsed_ms, "request");
        }
        None => {}
    }
    res
}

/// Successful fetches of public documents and health checks are logged at debug level: they
/// are the bulk of the traffic and say nothing about security (metrics still count them).
fn is_routine(route: &str) -> bool {
    route.ends_with("/jwks.json")
        || route.contains("/.well-known/")
        || route.contains("/static/")
        || route == "/healthz"
        || route == "/readyz"
}

/// The machine-to-machine endpoints: at scale, one info line per successful call would be most
/// of the log (a million token requests, a million lines). Their successes are counted in the
/// metrics and, where they grant or revoke, audited; their errors and denials are always logged.
fn is_api(route: &str) -> bool {
    route.ends_with("/token")
        || route.ends_with("/introspect")
        || route.ends_with("/revoke")
        || route.ends_with("/userinfo")
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_successes_are_routine_unless_sampled() {
        let quiet = super::Logging::new(&[], false, 0);
        assert!(quiet.routine("/token") && quiet.routine("/tenant/introspect") && quiet.routine("/jwks.json"));
        assert!(!quiet.routine("/authorize") && !quiet.routine("/register"), "pages and registration stay at info");
        let sampled = super::Logging::new(&[], false, 4);
        let logged = (0..100).filter(|_| !sampled.routine("/token")).count();
        assert_eq!(logged, 25, "one in four");
    }

    #[test]
    fn safe_ids() {
        assert!(super::is_safe("abc-123_x.y:z"));
        assert!(!super::is_safe(""));
        assert!(!super::is_safe("a b"));
        assert!(!super::is_safe("a\nb"));
        assert!(!super::is_safe(&"a".repeat(65)));
    }
}
