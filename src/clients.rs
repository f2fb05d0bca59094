//! Finding the client a request names: a registered client, or one described by a client ID
//! metadata document (fetched and cached by [`crate::cimd`]). Clients are remembered in memory
//! while this instance hears every change (a trigger announces them), so the token endpoint
//! usually finds its client without a database round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::cimd::{self, CimdError};
use crate::state::AppState;
pub use crate::store::clients::Client;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Document(#[from] CimdError),
}

const MAX_CACHED: usize = 100_000;

/// Clients by id. `epoch` moves on every change, so a row read before a change is not cached after it.
#[derive(Default)]
pub struct ClientCache {
    map: RwLock<HashMap<String, Arc<Client>>>,
    epoch: AtomicU64,
}

impl ClientCache {
    fn get(&self, client_id: &str) -> Option<Arc<Client>> {
        self.map.read().ok()?.get(client_id).cloned()
    }

    fn insert(&self, client: Arc<Client>, epoch: u64) {
        if let Ok(mut map) = self.map.write()
            && self.epoch.load(Ordering::SeqCst) == epoch
        {
            if map.len() >= MAX_CACHED {
                map.clear();
            }
            map.insert(client.client_id.clone(), client);
        }
    }

    /// A client changed or was deleted.
    pub fn invalidate(&self, client_id: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut map) = self.map.write() {
            map.remove(client_id);
        }
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut map) = self.map.write() {
            map.clear();
        }
    }
}

/// The client with this id, if any. A metadata document that cannot be used is an error, not
/// "unknown", so the person sees why.
pub async fn find(state: &AppState, client_id: &str) -> Result<Option<Arc<Client>>, LookupError> {
    if client_id.is_empty() || client_id.len() > 2048 {
        return Ok(None);
    }
    let trusted = state.is_listening();
    let document = cimd::is_document_url(client_id);
    if trusted && let Some(client) = state.clients.get(client_id) {
        let fresh = !document || client.document_expires_at.is_some_and(|t| t > chrono::Utc::now());
        if fresh {
            return Ok(Some(client));
        }
    }
    let epoch = state.clients.epoch.load(Ordering::SeqCst);
    let client = if document {
        Some(Arc::new(state.cimd.resolve(&state.pool, &state.audit, client_id).await?))
    } else {
        crate::store::clients::get(&state.pool, client_id).await?.map(Arc::new)
    };
    if trusted && let Some(client) = &client {
        state.clients.insert(client.clone(), epoch);
    }
    Ok(client)
}
