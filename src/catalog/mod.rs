//! What Tessera issues tokens for: the registered resources (MCP servers) and their scopes, and
//! the RFC 8414 metadata document that announces them.

pub mod discovery;
pub mod resources;
