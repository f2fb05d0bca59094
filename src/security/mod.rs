//! Cross-cutting HTTP protections: request ids and access logging, security headers.

pub mod client_addr;
pub mod cors;
pub mod headers;
pub mod rate_limit;
pub mod request_id;
pub mod ssrf;
