//! Tessera: a self-hosted OAuth 2.1 authorization server for the Model Context Protocol.
//!
//! The library holds everything; `main.rs` only runs [`cli::main`]. A test builds the whole
//! application with [`http::router`] from an [`state::AppState`].

pub mod audit;
pub mod cimd;
pub mod cli;
pub mod clients;
pub mod config;
pub mod error;
pub mod grant;
pub mod http;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod notify;
pub mod oauth;
pub mod password;
pub mod pgcluster;
pub mod resources;
pub mod revocation;
pub mod security;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tokens;
