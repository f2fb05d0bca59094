//! Tessera: a self-hosted OAuth 2.1 authorization server for the Model Context Protocol.
//!
//! The library holds everything; `main.rs` only runs [`cli::main`]. A test builds the whole
//! application with [`http::router`] from an [`state::AppState`]. Dependencies point down only
//! (`tests/layers.rs` checks it): top → `http` → domain → `oauth`, `store`.

// Top: build and wire everything.

/// The command line: `serve`, `dev` (and its private database), `migrate`, and the admin commands.
pub mod cli;
/// Running the router on listeners until shutdown.
pub mod server;
/// `AppState`: every shared part, built and wired, and the background tasks.
pub mod state;

// HTTP: parse, call the domain, render.

/// `tessera gateway`: the reverse proxy that protects an MCP server per tool.
pub mod gateway;
/// Endpoints, pages, middleware, error answers, and the router.
pub mod http;

// The domain: the rules, taking the parts they need and answering domain errors.

/// The person's own account page: connected applications, sessions, password change.
pub mod account;
/// Audit records and the batched writer.
pub mod audit;
/// Password sign-in (throttled) and browser-session validity.
pub mod authentication;
/// The authorization request: validate, decide the next step, issue the code.
pub mod authorization;
/// Group commit: short writes gathered and written together in one statement.
pub mod batch;
/// Client ID metadata documents: SSRF-safe fetching, validation, caching.
pub mod cimd;
/// Finding clients (cached, documents included), deleting them, noting their use.
pub mod clients;
/// Typed configuration from the environment and an optional TOML file.
pub mod config;
/// The RFC 8414 metadata document, as a pure function.
pub mod discovery;
/// Sign-in through upstream identity providers (OpenID Connect, GitHub): round trip, allowlists, accounts.
pub mod federation;
/// The token endpoint's grant types, one file each.
pub mod grant;
/// Signing keys: generation, encryption at rest, the key ring, the JWKS.
pub mod keys;
/// RP-initiated logout: the request checked, and whether the person confirms.
pub mod logout;
/// Periodic pruning of expired rows.
pub mod maintenance;
/// Prometheus counters.
pub mod metrics;
/// Cross-instance cache invalidation over `LISTEN/NOTIFY`.
pub mod notify;
/// OpenID Connect: ID tokens, the profile and email claims, OpenID client metadata, hints.
pub mod oidc;
/// Passkeys (WebAuthn): a second factor, or a sign-in of their own.
pub mod passkeys;
/// argon2id password hashing off the async runtime.
pub mod password;
/// A private PostgreSQL cluster from the local binaries (`dev`, tests).
pub mod pgcluster;
/// The gateway's per-tool policy: scopes and rates per tool, prompt and resource.
pub mod policy;
/// The registered resources, and resolving the one a request names.
pub mod resources;
/// What makes a token inactive, and revoking.
pub mod revocation;
/// The second factor after a password: TOTP and recovery codes.
pub mod second_factor;
/// Rate limiting and the SSRF address check.
pub mod security;
/// Logging setup.
pub mod telemetry;
/// Access tokens (RFC 9068): minting and verifying.
pub mod tokens;
/// Verifying tokens as a resource server: the issuer's JWKS, or introspection.
pub mod verifier;

// Bottom: pure protocol rules, and SQL.

/// Pure protocol rules (RFC-cited, no I/O).
pub mod oauth;
/// Every SQL statement, one file per table.
pub mod store;
