//! Tessera: a self-hosted OAuth 2.1 authorization server for the Model Context Protocol.
//!
//! The library holds everything; `main.rs` only runs [`cli::main`]. A test builds the whole
//! application with [`http::router`] from an [`state::AppState`]. Dependencies point down only
//! (`tests/layers.rs` checks it): top → `http`, `gateway` (over `web`) → the wings → `platform`,
//! `oauth`, `store`.

// Top: build and wire everything.

/// The command line: `serve`, `dev` (and its private database), `migrate`, and the admin commands.
pub mod cli;
/// Typed configuration from the environment and an optional TOML file.
pub mod config;
/// Running the router on listeners until shutdown.
pub mod server;
/// `AppState`: every shared part, built and wired, and the background tasks.
pub mod state;

// HTTP: parse, call a wing, render (or proxy).

/// `tessera gateway`: the reverse proxy that protects MCP servers per tool, with its policy and token verifier.
pub mod gateway;
/// The authorization server's endpoints and pages, and the router.
pub mod http;
/// HTTP plumbing both of them use: transport errors, request ids, client address, headers, CORS, health, metrics.
pub mod web;

// The wings: one feature each, taking the parts they need and answering domain errors.

/// Discovery of what Tessera issues tokens for: the resources, their scopes, the metadata document.
pub mod catalog;
/// Clients: finding them (cached), client ID metadata documents, deleting, noting their use.
pub mod clients;
/// The authorization request and the token endpoint's grant types, one file each.
pub mod grant;
/// Tessera as OpenID provider: ID tokens, claims, userinfo, RP-initiated logout.
pub mod openid;
/// Signing a person in: passwords, second factors, passkeys, federation, the account.
pub mod signin;
/// Access tokens, the signing keys, and revocation.
pub mod tokens;

// Bottom: what every wing stands on.

/// Pure protocol rules (RFC-cited, no I/O).
pub mod oauth;
/// Audit, group commit, notifications, maintenance, metrics, logging, rate limits, outbound fetches.
pub mod platform;
/// Every SQL statement, one file per table.
pub mod store;
