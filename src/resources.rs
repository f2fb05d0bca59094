//! The registered resources (MCP servers), held in memory by every instance and reloaded when
//! any instance announces a change: `/authorize` and `/token` never query them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::oauth::scope::OFFLINE_ACCESS;
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
