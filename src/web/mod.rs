//! HTTP plumbing shared by the authorization server's endpoints (`http/`) and the gateway:
//! transport errors, request ids and the access log, the client address behind trusted proxies,
//! security headers, CORS, health checks and the metrics endpoint. Knows axum, no endpoint.

pub mod client_addr;
pub mod cors;
pub mod error;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod request_id;
pub mod transport;
