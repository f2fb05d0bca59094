//! Integration tests: real HTTP against the whole router and a real PostgreSQL.
//! One binary for every test, so the test database server and template are set up once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod account;
mod authorization;
mod binary;
mod browser;
mod cimd;
mod compat;
mod consent;
mod credential_changes;
mod federation;
mod foundation;
mod gateway;
mod grants;
mod hardening;
mod introspection;
mod journey;
mod oidc;
mod passkeys;
mod registration;
mod schema;
mod second_factor;
mod zoo;
