//! `GET /authorize` (RFC 6749 §4.1.1, OAuth 2.1, RFC 7636, RFC 8707, RFC 9207): the browser's
//! signed-in user, then `authorization::begin` decides; the answer is a `303` (to the login or
//! consent page, or back to the client) or an error page.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use tower_sessions::Session;

use super::browser::{self, see_other};
use super::pages::PageError;
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::state::AppState;

pub async fn authorize(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let user = browser::signed_in(&state.pool, &session).await?;
    let resources = state.resources.load();
    let parts = state.authorization(&meta, &resources);
    match authorization::begin(&parts, query.as_deref().unwrap_or(""), user.as_ref()).await? {
        Ok(begun) => {
            // Only this browser may continue the request on the login and consent pages.
            browser::add_request(&session, &hex::encode(begun.handle.digest())).await?;
            Ok(see_other(&begun.location))
        }
        Err(refusal) => Ok(see_other(&refusal)),
    }
}
