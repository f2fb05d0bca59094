//! Every SQL statement Tessera runs, one file per table. Plain async functions over `PgPool` or
//! a connection, with row types of their own.
//! May import `oauth/` (digests) and nothing else of Tessera: not the domain, not `http`.

pub mod audit;
pub mod authz_requests;
pub mod clients;
pub mod federated_identities;
pub mod grants;
pub mod keys;
pub mod login_throttle;
pub mod maintenance;
pub mod passkeys;
pub mod profile;
pub mod registration_tokens;
pub mod resources;
pub mod revocation;
pub mod second_factors;
pub mod sessions;
pub mod upstreams;
pub mod users;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Apply the migrations under `migrations/`. sqlx holds an advisory lock while migrating, so
/// several instances starting at once apply each migration exactly once.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("./migrations").run(pool).await
}

/// A pool with the timeouts a server wants: fail fast when the database is unreachable rather
/// than hanging the request.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .idle_timeout(std::time::Duration::from_secs(300))
}

/// A small pool of `max_connections` on `pool`'s database whose connections plan every
/// statement for its parameters and the tables' current size (`plan_cache_mode =
/// force_custom_plan`), for a statement that a cached generic plan would hurt. Connects lazily.
pub fn custom_plans(pool: &PgPool, max_connections: u32) -> PgPool {
    let options = (*pool.connect_options()).clone().options([("plan_cache_mode", "force_custom_plan")]);
    pool_options(max_connections).connect_lazy_with(options)
}

/// Connect, failing with the connection error rather than retrying forever.
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    pool_options(max_connections).connect_with(options).await
}
