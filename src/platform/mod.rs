//! What every feature stands on: the audit trail, group commit, cross-instance notifications,
//! periodic maintenance, metrics, logging, rate limits, the outbound-fetch guard, the cache of
//! other parties' key sets (JWKS), and the dev PostgreSQL cluster. May use only `store/`,
//! `oauth/` and `config`.

pub mod audit;
pub mod batch;
pub mod fetch;
pub mod jwks;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod pgcluster;
pub mod rate_limit;
pub mod ssrf;
pub mod telemetry;
