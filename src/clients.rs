//! Finding the client a request names: a registered client, or one described by a client ID
//! metadata document (fetched and cached by [`crate::cimd`]).

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

/// The client with this id, if any. A metadata document that cannot be used is an error, not
/// "unknown", so the person sees why.
pub async fn find(state: &AppState, client_id: &str) -> Result<Option<Client>, LookupError> {
    if client_id.is_empty() || client_id.len() > 2048 {
        return Ok(None);
    }
    if cimd::is_document_url(client_id) {
        return Ok(Some(state.cimd.resolve(&state.pool, client_id).await?));
    }
    Ok(crate::store::clients::get(&state.pool, client_id).await?)
}
