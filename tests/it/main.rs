//! Integration tests: real HTTP against the whole router and a real PostgreSQL.
//! One binary for every test, so the test database server and template are set up once.

mod common;

mod binary;
mod foundation;
