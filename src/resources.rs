//! The registered resources (MCP servers), held in memory by every instance and reloaded when
//! any instance announces a change: `/authorize` and `/token` never query them. Also the rules
//! every endpoint shares for naming one (RFC 8707) and asking for its scopes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::oauth::scope::{self, OFFLINE_ACCESS};
use crate::oauth::{OAuthError, resource};
use crate::store::clients::Client;
pub use crate::store::resources::Resource;

#[derive(Default)]
pub struct ResourceSet {
    list: Vec<Arc<Resource>>,
    by_uri: HashMap<String, Arc<Resource>>,
    by_id: HashMap<Uuid, Arc<Resource>>,
    by_credential: HashMap<String, Arc<Resource>>,
}

impl ResourceSet {
    pub fn new(resources: Vec<Resource>) -> Self {
        let list: Vec<Arc<Resource>> = resources.into_iter().map(Arc::new).collect();
        let by_uri = list.iter().map(|r| (r.uri.clone(), r.clone())).collect();
        let by_id = list.iter().map(|r| (r.id, r.clone())).collect();
        let by_credential = list.iter().filter_map(|r| Some((r.credential_id.clone()?, r.clone()))).collect();
        Self { list, by_uri, by_id, by_credential }
    }

    /// A resource by its canonical URI.
    pub fn by_uri(&self, canonical: &str) -> Option<&Arc<Resource>> {
        self.by_uri.get(canonical)
    }

    pub fn by_id(&self, id: Uuid) -> Option<&Arc<Resource>> {
        self.by_id.get(&id)
    }

    /// The resource whose introspection credentials have this id.
    pub fn by_credential(&self, credential_id: &str) -> Option<&Arc<Resource>> {
        self.by_credential.get(credential_id)
    }

    /// The resource a `resource` parameter names (RFC 8707), compared in canonical form.
    pub fn named(&self, raw: &str) -> Result<&Arc<Resource>, OAuthError> {
        let canonical = resource::canonicalize(raw).map_err(|m| OAuthError::invalid_target(format!("resource {m}")))?;
        self.by_uri(&canonical)
            .ok_or_else(|| OAuthError::invalid_target("the resource is not registered with this server"))
    }

    /// The resource a request for `client` names, or the default one when it names none; the
    /// client must be allowed it.
    pub fn resolve(&self, client: &Client, requested: Option<&str>) -> Result<Arc<Resource>, OAuthError> {
        let resource = match requested {
            Some(raw) => self.named(raw)?,
            None => self
                .default_resource()
                .ok_or_else(|| OAuthError::invalid_target("resource is required (there is no default resource)"))?,
        };
        if !client.may_use_resource(resource.id) {
            return Err(OAuthError::invalid_target("this client may not obtain tokens for this resource"));
        }
        Ok(resource.clone())
    }

    /// The resource used when a request names none.
    pub fn default_resource(&self) -> Option<&Arc<Resource>> {
        self.list.iter().find(|r| r.is_default)
    }

    pub fn all(&self) -> &[Arc<Resource>] {
        &self.list
    }

    /// The longest access-token lifetime of any resource.
    pub fn max_token_ttl(&self) -> Option<Duration> {
        self.list.iter().map(|r| r.token_ttl).max()
    }

    /// Every scope of every resource, plus `offline_access`, for the metadata document.
    pub fn scopes_supported(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.list.iter().flat_map(|r| r.scopes.keys().cloned()).collect();
        scopes.push(OFFLINE_ACCESS.to_owned());
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

/// The scopes a request asks of `resource`: a subset of its scopes (plus `offline_access` where a
/// refresh token may follow), or its default scopes when the request names none.
pub fn requested_scopes(
    resource: &Resource,
    requested: Option<&str>,
    allow_offline: bool,
) -> Result<Vec<String>, OAuthError> {
    let Some(raw) = requested else { return Ok(resource.default_scopes.clone()) };
    let scopes = scope::parse(raw).map_err(OAuthError::invalid_scope)?;
    if let Some(unknown) =
        scopes.iter().find(|s| !(resource.scopes.contains_key(*s) || allow_offline && s.as_str() == OFFLINE_ACCESS))
    {
        return Err(OAuthError::invalid_scope(format!("scope {unknown} is not offered by {}", resource.uri)));
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(uri: &str, is_default: bool) -> Resource {
        Resource {
            id: Uuid::new_v4(),
            uri: uri.into(),
            name: "R".into(),
            scopes: [("tools:read".to_owned(), "Read".to_owned())].into(),
            default_scopes: vec!["tools:read".into()],
            token_ttl: Duration::from_secs(600),
            is_default,
            credential_id: None,
            credential_secret_hash: None,
        }
    }

    #[test]
    fn resolution() {
        let set = ResourceSet::new(vec![
            resource("https://mcp.example.com/mcp", true),
            resource("https://other.example.com/mcp", false),
        ]);
        let client = Client::new("c".into(), "C".into(), "admin");
        let named = |raw: &str| set.resolve(&client, Some(raw)).map(|r| r.uri.clone());
        assert_eq!(named("https://MCP.example.com:443/mcp/").unwrap(), "https://mcp.example.com/mcp");
        assert_eq!(set.resolve(&client, None).unwrap().uri, "https://mcp.example.com/mcp", "the default");
        for (raw, why) in [
            ("https://unknown.example.com/mcp", "not registered"),
            ("https://mcp.example.com/mcp#f", "fragment"),
            ("not a uri", "absolute"),
        ] {
            let e = named(raw).unwrap_err();
            assert_eq!(e.code, crate::oauth::ErrorCode::InvalidTarget, "{raw}");
            assert!(e.description.contains(why), "{raw}: {}", e.description);
        }
        let mut limited = client.clone();
        limited.allowed_resources = vec![set.by_uri("https://other.example.com/mcp").unwrap().id];
        assert!(set.resolve(&limited, None).is_err(), "the default is not allowed to this client");
        assert!(set.resolve(&limited, Some("https://other.example.com/mcp")).is_ok());
        let none = ResourceSet::new(vec![resource("https://other.example.com/mcp", false)]);
        assert!(none.resolve(&client, None).unwrap_err().description.contains("no default"));
    }

    #[test]
    fn scopes() {
        let r = resource("https://mcp.example.com/mcp", true);
        assert_eq!(requested_scopes(&r, None, false).unwrap(), ["tools:read"]);
        assert_eq!(requested_scopes(&r, Some("tools:read offline_access"), true).unwrap().len(), 2);
        assert!(requested_scopes(&r, Some("offline_access"), false).is_err(), "no refresh for client_credentials");
        assert!(requested_scopes(&r, Some("tools:write"), true).is_err());
    }
}
