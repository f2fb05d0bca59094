//! Protections the domain applies whatever the transport: per-instance rate limits and the
//! special-use address check of outgoing fetches. May import `config` and nothing above the domain.

pub mod fetch;
pub mod rate_limit;
pub mod ssrf;
