//! CORS for the endpoints browser-based MCP clients call directly: any origin, no credentials
//! (no cookies are involved), `MCP-Protocol-Version` allowed. Everything here is static, so
//! the per-request cost is a header lookup.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which methods a route family allows cross-origin.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub methods: &'static str,
}

/// Discovery and JWKS.
pub const DOCUMENTS: Policy = Policy { methods: "GET, OPTIONS" };
/// `/token` and `/revoke`.
pub const API: Policy = Policy { methods: "POST, OPTIONS" };
/// `/userinfo` (OpenID Connect: GET or POST).
pub const USERINFO: Policy = Policy { methods: "GET, POST, OPTIONS" };
/// `/register` and the client configuration endpoint.
pub const REGISTRATION: Policy = Policy { methods: "GET, POST, PUT, DELETE, OPTIONS" };

const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("content-type, authorization, mcp-protocol-version");
const ANY: HeaderValue = HeaderValue::from_static("*");
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");
const VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers");

pub async fn layer(axum::extract::State(policy): axum::extract::State<Policy>, req: Request, next: Next) -> Response {
    let cross_origin = req.headers().contains_key(header::ORIGIN);
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(policy.methods));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
        h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
        h.insert(header::VARY, VARY);
        return res;
    }
    let mut res = next.run(req).await;
    // Always, not only when an Origin is sent: any site may read these answers anyway.
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
    if cross_origin {
        let expose = HeaderValue::from_static("www-authenticate, retry-after");
        res.headers_mut().insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose);
    }
    res
}
