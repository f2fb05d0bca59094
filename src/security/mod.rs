//! Cross-cutting HTTP protections: request ids and access logging, security headers.

pub mod headers;
pub mod request_id;
