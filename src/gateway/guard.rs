//! The MCP endpoint: every request passes, in order, the Origin check (DNS rebinding), the bearer
//! token (audience: this resource), the JSON-RPC body (size, shape, `Mcp-Method`/`Mcp-Name`),
//! the policy (scopes per tool, prompt, resource), and the rate limits (client, subject,
//! client and tool); then it is forwarded. Each `tools/call`, and each refused request, leaves
//! one audit record: who, which tool, the SHA-256 of the arguments in canonical JSON (RFC 8785),
//! the outcome, the upstream status and latency. Never the arguments, never the token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::mcp::{self, Message};
use super::{Gateway, MAX_BODY, proxy};
use crate::gateway::policy::{Refusal, Rule, Target};
use crate::oauth::scope;
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::platform::rate_limit::retry_after_secs;
use crate::tokens::{AccessClaims, Invalid};
use crate::web::headers::Bearer;

/// Why a request was not forwarded (or failed upstream), as the audit and the answer say it.
#[derive(Debug)]
pub(super) enum Refused {
    Origin,
    NoToken,
    InvalidToken(Invalid),
    Unverifiable,
    TooLarge,
    BadRequest(&'static str),
    InsufficientScope { needed: Vec<String> },
    NotAllowed,
    RateLimited(Duration),
    Method,
}

impl Refused {
    fn outcome(&self) -> (&'static str, Outcome) {
        match self {
            Self::Origin => ("forbidden_origin", Outcome::Denied),
            Self::NoToken | Self::InvalidToken(_) => ("invalid_token", Outcome::Denied),
            Self::Unverifiable => ("token_unverifiable", Outcome::Error),
            Self::TooLarge | Self::BadRequest(_) | Self::Method => ("bad_request", Outcome::Denied),
            Self::InsufficientScope { .. } => ("insufficient_scope", Outcome::Denied),
            Self::NotAllowed => ("not_allowed", Outcome::Denied),
            Self::RateLimited(_) => ("rate_limited", Outcome::RateLimited),
        }
    }
}

pub async fn mcp(State(gw): State<Arc<Gateway>>, meta: RequestMeta, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let origin_ok = origin_allowed(&gw, &parts.headers);
    if parts.method == Method::OPTIONS && origin_ok {
        return preflight(&parts.headers);
    }
    let mut res = match admit(&gw, &parts, body).await {
        Ok(admitted) => forward(&gw, &meta, &parts, admitted).await,
        Err((refused, claims, messages)) => {
            record_refusal(&gw, &meta, claims.as_deref(), &messages, &refused).await;
            answer(&gw, &refused, &messages)
        }
    };
    if origin_ok && let Some(origin) = parts.headers.get(header::ORIGIN) {
        cors(res.headers_mut(), origin.clone());
    }
    res
}

/// A request that passed every check.
struct Admitted<'g> {
    claims: Arc<AccessClaims>,
    body: Bytes,
    messages: Vec<Message>,
    /// The policy rule that matched each message (None: the baseline alone).
    rules: Vec<Option<&'g Rule>>,
}

/// A refused request: why, and what is known of it for the audit record.
type Rejected = (Refused, Option<Arc<AccessClaims>>, Vec<Message>);

async fn admit<'g>(gw: &'g Gateway, parts: &axum::http::request::Parts, body: Body) -> Result<Admitted<'g>, Rejected> {
    if !origin_allowed(gw, &parts.headers) {
        return Err((Refused::Origin, None, Vec::new()));
    }
    if !matches!(parts.method, Method::POST | Method::GET | Method::DELETE) {
        return Err((Refused::Method, None, Vec::new()));
    }
    let Some(token) = Bearer::from_headers(&parts.headers).token() else {
        return Err((Refused::NoToken, None, Vec::new()));
    };
    let (body, messages) = if parts.method == Method::POST {
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| (Refused::TooLarge, None, Vec::new()))?;
        let (messages, batch) = mcp::parse(&body).map_err(|e| (Refused::BadRequest(e.0), None, Vec::new()))?;
        if let Err(e) = mcp::headers_agree(&parts.headers, &messages, batch) {
            return Err((Refused::BadRequest(e.0), None, messages));
        }
        (body, messages)
    } else {
        (Bytes::new(), Vec::new())
    };
    let claims = match gw.verifier.verify(token, &gw.settings.resource).await {
        Ok(claims) => claims,
        Err(Invalid::Unverifiable) => return Err((Refused::Unverifiable, None, messages)),
        Err(e) => return Err((Refused::InvalidToken(e), None, messages)),
    };
    let rules = match authorize(gw, &claims, &messages) {
        Ok(rules) => rules,
        Err(refused) => return Err((refused, Some(claims), messages)),
    };
    if let Err(wait) = limit(gw, &claims, &messages, &rules) {
        return Err((Refused::RateLimited(wait), Some(claims), messages));
    }
    Ok(Admitted { claims, body, messages, rules })
}

/// The policy, for every message (a GET or DELETE needs the baseline only): the rule each
/// message matched. A refusal for scope names what to step up to: the scopes the token holds
/// and those the call needs.
fn authorize<'g>(
    gw: &'g Gateway,
    claims: &AccessClaims,
    messages: &[Message],
) -> Result<Vec<Option<&'g Rule>>, Refused> {
    let held = held_scopes(claims);
    let targets: Vec<Target<'_>> =
        if messages.is_empty() { vec![Target::Other] } else { messages.iter().map(Message::target).collect() };
    let mut needed = Vec::new();
    let mut rules = Vec::with_capacity(targets.len());
    for target in targets {
        match gw.policy.check(target, &held) {
            Ok(rule) => rules.push(rule),
            Err(Refusal::NotAllowed) => return Err(Refused::NotAllowed),
            Err(Refusal::InsufficientScope { needed: more }) => needed.extend(more),
        }
    }
    if needed.is_empty() {
        return Ok(rules);
    }
    needed.extend(held);
    needed.sort();
    needed.dedup();
    Err(Refused::InsufficientScope { needed })
}

/// The rate limits: per client and per subject for every request, per client and tool for
/// every `tools/call` whose rule sets a rate.
fn limit(gw: &Gateway, claims: &AccessClaims, messages: &[Message], rules: &[Option<&Rule>]) -> Result<(), Duration> {
    let limits = &gw.limits;
    if let Some(l) = &limits.per_client {
        l.check(&claims.client_id)?;
    }
    if let Some(l) = &limits.per_subject {
        l.check(&claims.sub)?;
    }
    for (message, rule) in messages.iter().zip(rules) {
        if message.is_tool_call()
            && let Some(rule) = rule
            && let Some(l) = limits.per_tool.get(&rule.pattern)
        {
            l.check(&claims.client_id)?;
        }
    }
    Ok(())
}

fn held_scopes(claims: &AccessClaims) -> Vec<String> {
    claims.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

async fn forward(
    gw: &Arc<Gateway>,
    meta: &RequestMeta,
    parts: &axum::http::request::Parts,
    a: Admitted<'_>,
) -> Response {
    let started = Instant::now();
    let tools_list = mcp::tools_list_id(&a.messages);
    let result = proxy::forward(gw, parts, a.body, &a.claims, meta.source).await;
    let latency = started.elapsed();
    let status = result.as_ref().map_or(StatusCode::BAD_GATEWAY, |r| r.status());
    for (message, rule) in a.messages.iter().zip(&a.rules).filter(|(m, _)| m.is_tool_call()) {
        let outcome =
            if status.is_server_error() { ("upstream_error", Outcome::Error) } else { ("allowed", Outcome::Success) };
        let upstream = format!("upstream_status={} latency_ms={:.3}", status.as_u16(), latency.as_secs_f64() * 1e3);
        record(gw, meta, Some(&a.claims), Some(message), outcome, Some(&upstream)).await;
        crate::platform::metrics::gateway_call(rule.map_or("(unnamed)", |r| r.pattern.as_str()), outcome.0, latency);
    }
    match result {
        Ok(res) => match tools_list {
            Some(id) => proxy::filter_tools_list(gw.clone(), res, id, held_scopes(&a.claims)).await,
            None => res,
        },
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            rpc_error(StatusCode::BAD_GATEWAY, &a.messages, -32000, "the MCP server could not be reached")
        }
    }
}

fn origin_allowed(gw: &Gateway, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).map(|o| o.to_str().unwrap_or("")) {
        None => true,
        Some(origin) => origin == gw.origin || gw.settings.allowed_origins.iter().any(|a| a == origin),
    }
}

async fn record_refusal(
    gw: &Gateway,
    meta: &RequestMeta,
    claims: Option<&AccessClaims>,
    messages: &[Message],
    refused: &Refused,
) {
    crate::platform::metrics::gateway_refused(refused.outcome().0);
    let calls: Vec<&Message> = messages.iter().filter(|m| m.is_tool_call()).collect();
    if calls.is_empty() {
        record(gw, meta, claims, None, refused.outcome(), None).await;
    }
    for message in calls {
        record(gw, meta, claims, Some(message), refused.outcome(), None).await;
    }
}

/// One audit record: `tool.call` for a tool call, `gateway.refused` for any other refusal.
async fn record(
    gw: &Gateway,
    meta: &RequestMeta,
    claims: Option<&AccessClaims>,
    message: Option<&Message>,
    (outcome, kind): (&'static str, Outcome),
    upstream: Option<&str>,
) {
    let tool = message.and_then(|m| m.name.as_deref());
    let mut event = Event::new(if tool.is_some() { "tool.call" } else { "gateway.refused" }, kind)
        .during(meta)
        .resource(&gw.settings.resource);
    if let Some(claims) = claims {
        event = event.client(&claims.client_id).subject(&claims.sub).scopes(&claims.scope);
    }
    if let Some(arguments) = message.and_then(|m| m.arguments.as_ref()) {
        event = event.digest(&crate::platform::audit::canonical_digest(arguments));
    }
    let mut detail = match tool {
        Some(tool) => format!("tool={tool} outcome={outcome}"),
        None => format!("outcome={outcome}"),
    };
    if let Some(upstream) = upstream {
        detail.push(' ');
        detail.push_str(upstream);
    }
    gw.audit.record(event.detail(detail)).await;
}

/// The answer to a refusal.
fn answer(gw: &Gateway, refused: &Refused, messages: &[Message]) -> Response {
    match refused {
        Refused::Origin => oauth_error(StatusCode::FORBIDDEN, "forbidden", "this Origin may not call this server"),
        Refused::NoToken => challenge(gw, None, "a bearer token is required"),
        Refused::InvalidToken(why) => challenge(gw, Some(why), "the access token is not valid for this resource"),
        Refused::Unverifiable => {
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the token cannot be checked now")
        }
        Refused::TooLarge => {
            rpc_error(StatusCode::PAYLOAD_TOO_LARGE, messages, -32600, "the request body is too large")
        }
        Refused::BadRequest(why) => rpc_error(StatusCode::BAD_REQUEST, messages, -32600, why),
        Refused::Method => oauth_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST, GET or DELETE"),
        Refused::NotAllowed => {
            rpc_error(StatusCode::FORBIDDEN, messages, -32002, "the gateway's policy does not allow this request")
        }
        Refused::InsufficientScope { needed } => insufficient_scope(gw, needed, messages),
        Refused::RateLimited(wait) => {
            let secs = retry_after_secs(*wait);
            let mut res = rpc_error(StatusCode::TOO_MANY_REQUESTS, messages, -32003, "too many requests; retry later");
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            res
        }
    }
}

/// 401 as the MCP authorization specification says: `resource_metadata`, and the baseline
/// scope when the policy names one.
fn challenge(gw: &Gateway, invalid: Option<&Invalid>, description: &'static str) -> Response {
    let mut value = format!("Bearer resource_metadata=\"{}\"", gw.metadata_url);
    if !gw.policy.baseline.is_empty() {
        value.push_str(&format!(", scope=\"{}\"", scope::join(&gw.policy.baseline)));
    }
    if invalid.is_some() {
        value.push_str(", error=\"invalid_token\"");
    }
    let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_token", description);
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// 403 with the scopes to step up to (what the token holds and what the call needs), so a
/// client that replaces its scope with the challenge keeps what it had.
fn insufficient_scope(gw: &Gateway, needed: &[String], messages: &[Message]) -> Response {
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\"",
        scope::join(needed),
        gw.metadata_url
    );
    let mut res = rpc_error(StatusCode::FORBIDDEN, messages, -32001, "the access token lacks a scope this call needs");
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": code, "error_description": description}))).into_response()
}

/// A JSON-RPC error answer, for the (first) request's id.
fn rpc_error(status: StatusCode, messages: &[Message], code: i64, message: &str) -> Response {
    let id = messages.iter().find_map(|m| m.id.clone()).unwrap_or(Value::Null);
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// CORS for browser-based MCP clients on allowed origins.
fn cors(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Mcp-Session-Id, WWW-Authenticate, Retry-After"),
    );
}

fn preflight(headers: &HeaderMap) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID",
        ),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    if let Some(origin) = headers.get(header::ORIGIN) {
        cors(h, origin.clone());
    }
    res
}
