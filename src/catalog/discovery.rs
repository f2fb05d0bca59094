//! The authorization server metadata document (RFC 8414), which is also the OpenID Provider
//! metadata (OpenID Connect Discovery 1.0 §3): one document, served at both well-known paths, as
//! a pure function of the issuer, the registration policy and the resources. It lists only what
//! works.

use axum::body::Bytes;
use serde_json::json;

use crate::catalog::resources::ResourceSet;
use crate::config::{Issuer, RegistrationPolicy};

/// Every claim an ID token or userinfo answer may carry.
pub const CLAIMS_SUPPORTED: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "name",
    "preferred_username",
    "updated_at",
    "email",
    "email_verified",
];

/// The document, serialized (it is rebuilt whenever the resources change).
pub fn document(issuer: &Issuer, registration: RegistrationPolicy, resources: &ResourceSet) -> Bytes {
    let mut doc = json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": issuer.join("/authorize"),
        "token_endpoint": issuer.join("/token"),
        "jwks_uri": issuer.join("/jwks.json"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint": issuer.join("/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint": issuer.join("/revoke"),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": resources.scopes_supported(),
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
        // OpenID Connect.
        "userinfo_endpoint": issuer.join("/userinfo"),
        "end_session_endpoint": issuer.join("/logout"),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    if registration != RegistrationPolicy::Closed {
        doc["registration_endpoint"] = json!(issuer.join("/register"));
    }
    serde_json::to_vec(&doc).unwrap_or_default().into()
}
