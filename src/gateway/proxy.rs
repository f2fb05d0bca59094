//! Forwarding to the MCP server: the request as it came (method, query, body, `Mcp-Session-Id`
//! and the other MCP headers), minus `Authorization`, hop-by-hop headers and any identity header a
//! client could forge; plus the verified identity in the headers the operator names. The answer
//! streams back as it arrives (JSON or server-sent events), except that the answer to
//! `tools/list` is filtered to the tools the token may call.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use axum::response::Response;
use http_body_util::Full;
use serde_json::Value;

use super::{Gateway, sse};
use crate::config::IdentityField;
use crate::gateway::policy::Target;
use crate::tokens::AccessClaims;

/// Largest JSON answer to `tools/list` the gateway reads to filter it.
const MAX_LIST: usize = 16 * 1024 * 1024;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and never pass.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
];

/// Identity headers common proxies set: a client must not be able to send them upstream.
const FORGEABLE_IDENTITY: [&str; 8] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-remote-user",
    "remote-user",
];

/// Send the request upstream; the answer's head, and its body as a stream.
pub async fn forward(
    gw: &Gateway,
    parts: &axum::http::request::Parts,
    body: Bytes,
    claims: &AccessClaims,
    source: IpAddr,
) -> Result<Response, hyper_util::client::legacy::Error> {
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = upstream_uri(&gw.settings.upstream, parts.uri.query());
    let headers = req.headers_mut();
    for (name, value) in &parts.headers {
        if passes(gw, name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&source.to_string()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    for (field, name) in &gw.settings.identity_headers {
        let value = match field {
            IdentityField::Subject => &claims.sub,
            IdentityField::Client => &claims.client_id,
            IdentityField::Scopes => &claims.scope,
        };
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), v);
        }
    }
    let res = gw.upstream.request(req).await?;
    let (mut head, incoming) = res.into_parts();
    strip_hop_by_hop(&mut head.headers);
    Ok(Response::from_parts(head, Body::new(incoming)))
}

/// Whether a request header passes to the upstream.
fn passes(gw: &Gateway, name: &HeaderName) -> bool {
    let n = name.as_str();
    !(HOP_BY_HOP.contains(&n)
        || FORGEABLE_IDENTITY.contains(&n)
        || matches!(n, "authorization" | "proxy-authorization" | "host" | "content-length" | "x-forwarded-for")
        || gw.settings.identity_headers.iter().any(|(_, h)| h == name))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The upstream URL, with the request's query.
fn upstream_uri(upstream: &url::Url, query: Option<&str>) -> Uri {
    let mut url = upstream.clone();
    url.set_query(query);
    url.as_str().parse().unwrap_or_default()
}

/// The answer to a `tools/list` (request `id`), with only the tools `held` scopes may call.
pub async fn filter_tools_list(gw: Arc<Gateway>, res: Response, id: Value, held: Vec<String>) -> Response {
    let content_type = res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let rewrite = move |message: &mut Value| filter_message(&gw, message, &id, &held);
    if content_type.starts_with("text/event-stream") {
        let (mut head, body) = res.into_parts();
        // Events may change length as they pass: the answer streams without a length.
        head.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(head, sse::rewrite_events(body, rewrite));
    }
    if !content_type.starts_with("application/json") {
        return res;
    }
    let (mut head, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_LIST).await else {
        tracing::warn!("the answer to tools/list is too large to filter");
        head.status = axum::http::StatusCode::BAD_GATEWAY;
        head.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(head, Body::empty());
    };
    let Ok(mut message) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(head, Body::from(bytes));
    };
    let changed = match &mut message {
        Value::Array(batch) => {
            let mut changed = false;
            for m in batch {
                changed |= rewrite(m);
            }
            changed
        }
        single => rewrite(single),
    };
    if !changed {
        return Response::from_parts(head, Body::from(bytes));
    }
    head.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(message.to_string()))
}

/// Keep the tools of the answer to request `id` that the policy allows for `held`.
fn filter_message(gw: &Gateway, message: &mut Value, id: &Value, held: &[String]) -> bool {
    if &message["id"] != id {
        return false;
    }
    let Some(tools) = message.pointer_mut("/result/tools").and_then(Value::as_array_mut) else { return false };
    tools.retain(|tool| tool["name"].as_str().is_some_and(|name| gw.policy.check(Target::Tool(name), held).is_ok()));
    true
}
