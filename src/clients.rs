//! Finding the client a request names.

use crate::state::AppState;
pub use crate::store::clients::Client;

/// The registered client with this id, if any.
pub async fn find(state: &AppState, client_id: &str) -> Result<Option<Client>, sqlx::Error> {
    if client_id.is_empty() || client_id.len() > 2048 {
        return Ok(None);
    }
    crate::store::clients::get(&state.pool, client_id).await
}
