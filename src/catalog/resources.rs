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
    /// The userinfo endpoint as a resource: where OpenID requests that name none go.
    userinfo: Option<Arc<Resource>>,
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
        Self { list, userinfo: None, by_uri, by_id, by_credential }
    }

    /// Mark the resource at `uri` as the userinfo endpoint.
    pub fn with_userinfo(mut self, uri: &str) -> Self {
        self.userinfo = self.by_uri.get(uri).cloned();
        self
    }

    /// The userinfo endpoint's resource, when there is one.
    pub fn userinfo(&self) -> Option<&Arc<Resource>> {
        self.userinfo.as_ref()
    }

    /// Whether `resource` is the userinfo endpoint.
    pub fn is_userinfo(&self, resource: &Resource) -> bool {
        self.userinfo.as_ref().is_some_and(|u| u.id == resource.id)
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

    /// The resource a request for `client` names, or when it names none: the userinfo endpoint
    /// for an OpenID Connect request (`openid`), else the default resource. The client must be
    /// allowed it (every client may ask for userinfo: it tells a user's own claims, with consent).
    pub fn resolve(&self, client: &Client, requested: Option<&str>, openid: bool) -> Result<Arc<Resource>, OAuthError> {
        let resource = match requested {
            Some(raw) => self.named(raw)?,
            None => openid
                .then_some(self.userinfo.as_ref())
                .flatten()
                .or_else(|| self.default_resource())
                .ok_or_else(|| OAuthError::invalid_target("resource is required (there is no default resource)"))?,
        };
        if !(client.may_use_resource(resource.id) || self.is_userinfo(resource)) {
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

    /// Every scope of every resource, plus `offline_access` and the OpenID Connect scopes, for
    /// the metadata document.
    pub fn scopes_supported(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.list.iter().flat_map(|r| r.scopes.keys().cloned()).collect();
        scopes.push(OFFLINE_ACCESS.to_owned());
        scopes.extend(scope::OIDC_SCOPES.iter().map(|s| (*s).to_owned()));
        scopes.sort();
        scopes.dedup();
        scopes
    }
}

/// The scopes a request asks of `resource`: a subset of its scopes (plus `offline_access` and the
/// OpenID Connect scopes in the authorization code flow, `user_flow`), or its default scopes when
/// the request names none.
pub fn requested_scopes(
    resource: &Resource,
    requested: Option<&str>,
    user_flow: bool,
) -> Result<Vec<String>, OAuthError> {
    let Some(raw) = requested else { return Ok(resource.default_scopes.clone()) };
    let scopes = scope::parse(raw).map_err(OAuthError::invalid_scope)?;
    let everywhere = |s: &str| user_flow && (s == OFFLINE_ACCESS || scope::OIDC_SCOPES.contains(&s));
    if let Some(unknown) = scopes.iter().find(|s| !(resource.scopes.contains_key(*s) || everywhere(s))) {
        return Err(OAuthError::invalid_scope(format!("scope {unknown} is not offered by {}", resource.uri)));
    }
    Ok(scopes)
}

/// Make sure the userinfo endpoint exists as a resource (OpenID Connect's scopes, tokens of 10
/// minutes), so OpenID requests have an audience of their own.
pub async fn ensure_userinfo(pool: &sqlx::PgPool, uri: &str) -> Result<(), sqlx::Error> {
    let r = Resource {
        id: Uuid::new_v4(),
        uri: uri.to_owned(),
        name: "Your account (OpenID Connect)".into(),
        scopes: [
            (scope::OPENID, "Sign you in with your account (your user id)"),
            (scope::PROFILE, "Your name and username"),
            (scope::EMAIL, "Your email address"),
        ]
        .into_iter()
        .map(|(s, d)| (s.to_owned(), d.to_owned()))
        .collect(),
        default_scopes: vec![scope::OPENID.to_owned()],
        token_ttl: Duration::from_secs(600),
        is_default: false,
        credential_id: None,
        credential_secret_hash: None,
        scope_details: Default::default(),
    };
    match crate::store::resources::add(pool, &r).await {
        Ok(()) | Err(crate::store::resources::AddError::Duplicate) => Ok(()),
        Err(crate::store::resources::AddError::Database(e)) => Err(e),
    }
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
            scope_details: Default::default(),
        }
    }

    #[test]
    fn resolution() {
        let set = ResourceSet::new(vec![
            resource("https://mcp.example.com/mcp", true),
            resource("https://other.example.com/mcp", false),
        ]);
        let client = Client::new("c".into(), "C".into(), "admin");
        let named = |raw: &str| set.resolve(&client, Some(raw), false).map(|r| r.uri.clone());
        assert_eq!(named("https://MCP.example.com:443/mcp/").unwrap(), "https://mcp.example.com/mcp");
        assert_eq!(set.resolve(&client, None, false).unwrap().uri, "https://mcp.example.com/mcp", "the default");
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
        assert!(set.resolve(&limited, None, false).is_err(), "the default is not allowed to this client");
        assert!(set.resolve(&limited, Some("https://other.example.com/mcp"), false).is_ok());
        let none = ResourceSet::new(vec![resource("https://other.example.com/mcp", false)]);
        assert!(none.resolve(&client, None, false).unwrap_err().description.contains("no default"));
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
