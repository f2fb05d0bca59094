//! `tessera gateway`: a reverse proxy in front of an unmodified MCP server that needs no code in
//! it. It publishes the protected resource metadata (RFC 9728), checks every request's Origin
//! and bearer token (audience: this resource), applies the per-tool policy and rate limits,
//! records every tool call (and every refusal) in the audit log, and streams the answer back,
//! filtering `tools/list` to what the token may call.
//! HTTP layer, beside `http/`: it shares `web/` (transport, request ids, headers) and of the
//! wings uses only `tokens/` (to verify); its policy and token verifier live here; nothing
//! imports it but `cli/`.

mod guard;
pub mod mcp;
pub mod policy;
mod proxy;
pub mod sse;
pub mod verifier;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{IdentityField, Rate};
use crate::gateway::policy::Policy;
use crate::gateway::verifier::Verifier;
use crate::platform::audit::AuditSink;
use crate::platform::rate_limit::Limiter;
use crate::web::client_addr::Peer;
use crate::web::{error::ApiError, headers, request_id, transport};

/// Largest request body the gateway reads (to inspect it) before forwarding.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// What the gateway is told, resolved.
pub struct Settings {
    /// The MCP server behind the gateway.
    pub upstream: url::Url,
    /// The protected resource's canonical URI (the tokens' audience).
    pub resource: String,
    pub issuer: String,
    /// Origins allowed besides the resource's own.
    pub allowed_origins: Vec<String>,
    /// Headers that carry the verified identity upstream.
    pub identity_headers: Vec<(IdentityField, HeaderName)>,
    /// Proxies whose forwarded-for headers are believed (for the audit's source address).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The per-instance limits the policy asks for.
struct Limits {
    per_client: Option<Limiter<String>>,
    per_subject: Option<Limiter<String>>,
    /// Per (client, tool), by the pattern of the rule that set the rate.
    per_tool: HashMap<String, Limiter<String>>,
}

impl Limits {
    fn new(policy: &Policy) -> Self {
        let limiter = |(count, period): Rate| Limiter::new(count, period);
        Self {
            per_client: policy.per_client.map(limiter),
            per_subject: policy.per_subject.map(limiter),
            per_tool: policy.rated_rules().map(|(pattern, rate)| (pattern.to_owned(), limiter(rate))).collect(),
        }
    }
}

pub struct Gateway {
    pub settings: Settings,
    pub policy: Policy,
    pub verifier: Verifier,
    pub audit: AuditSink,
    limits: Limits,
    upstream: Client<HttpConnector, Full<Bytes>>,
    /// The protected resource metadata document, serialized once.
    metadata: Bytes,
    /// Where that document is, for `WWW-Authenticate`.
    metadata_url: String,
    /// The resource's own origin (always allowed).
    origin: String,
}

impl Gateway {
    pub fn new(settings: Settings, policy: Policy, verifier: Verifier, audit: AuditSink) -> Self {
        let resource = url::Url::parse(&settings.resource).ok();
        let origin = resource.as_ref().map(|u| u.origin().ascii_serialization()).unwrap_or_default();
        let path = resource.as_ref().map(|u| u.path().trim_end_matches('/').to_owned()).unwrap_or_default();
        let metadata_url = format!("{origin}/.well-known/oauth-protected-resource{path}");
        let mut document = json!({
            "resource": settings.resource,
            "authorization_servers": [settings.issuer],
            "scopes_supported": policy.scopes_supported(),
            "bearer_methods_supported": ["header"],
        });
        if let Some(name) = &policy.resource_name {
            document["resource_name"] = json!(name);
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let upstream = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            limits: Limits::new(&policy),
            metadata: serde_json::to_vec(&document).unwrap_or_default().into(),
            metadata_url,
            origin,
            settings,
            policy,
            verifier,
            audit,
            upstream,
        }
    }

    /// The path the MCP endpoint is served at: the resource's path (`/mcp`).
    fn endpoint_path(&self) -> String {
        let path = url::Url::parse(&self.settings.resource).map(|u| u.path().to_owned()).unwrap_or_default();
        if path.is_empty() { "/".to_owned() } else { path }
    }
}

/// The gateway's routes and layers.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let endpoint = gateway.endpoint_path();
    let resource_path = endpoint.trim_end_matches('/').to_owned();
    let mut app = Router::new()
        .route("/.well-known/oauth-protected-resource", get(metadata))
        .route("/healthz", get(crate::web::health::healthz))
        .route("/readyz", get(readyz))
        .route(&endpoint, any(guard::mcp));
    if !resource_path.is_empty() {
        app = app.route(&format!("/.well-known/oauth-protected-resource{resource_path}"), get(metadata));
    }
    // Each tool call and each refusal has its audit line (with the request id): a successful
    // request needs no access line of its own.
    let logging = request_id::Logging::new(&gateway.settings.trusted_proxies, true, 0);
    app.fallback(|| async { ApiError::not_found().into_response() })
        .with_state(gateway)
        .layer(axum::middleware::map_response(|mut res: Response| async move {
            headers::apply(res.headers_mut(), false);
            res
        }))
        .layer(axum::middleware::from_fn_with_state(logging, request_id::layer))
}

/// RFC 9728 protected resource metadata: public, cacheable, readable cross-origin.
async fn metadata(axum::extract::State(gw): axum::extract::State<Arc<Gateway>>) -> Response {
    let mut res = gw.metadata.clone().into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

/// Ready when tokens can be checked and the upstream accepts connections.
async fn readyz(axum::extract::State(gw): axum::extract::State<Arc<Gateway>>) -> Response {
    let upstream = &gw.settings.upstream;
    let address = (upstream.host_str().unwrap_or_default(), upstream.port_or_known_default().unwrap_or(80));
    let reachable = matches!(
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    );
    let keys = gw.verifier.is_ready();
    if reachable && keys {
        return axum::Json(json!({"status": "ready"})).into_response();
    }
    let reason = if keys { "upstream unreachable" } else { "the issuer's keys are not loaded" };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "unavailable", "reason": reason}))).into_response()
}

/// Serve until `shutdown`, then let requests and streams finish for up to `grace`.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(gateway);
    let listener = transport::Listener::new(listener, false);
    let stopped = shutdown.clone();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move { stopped.cancelled().await });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined.map_err(std::io::Error::other)?,
        Err(_) => {
            tracing::warn!("streams still open after the shutdown grace; closing them");
            Ok(())
        }
    }
}

/// Where the gateway listens, for log lines.
pub fn describe(listen: SocketAddr, gateway: &Gateway) -> String {
    format!("{listen} -> {} (resource {})", gateway.settings.upstream, gateway.settings.resource)
}
