//! `GET /authorize` (RFC 6749 §4.1.1, OAuth 2.1, RFC 7636, RFC 8707, RFC 9207): the browser's
//! signed-in user, then `authorization::begin` decides; the answer is a `303` (to the login or
//! consent page, or back to the client) or an error page.

use axum::extract::{RawQuery, State};
use axum::response::Response;

use super::browser::see_other;
use super::extract::SignedIn;
use super::pages::PageError;
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::signin::session::BrowserSession;
use crate::state::AppState;

pub async fn authorize(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    user: Option<SignedIn>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let user = user.map(|SignedIn(user)| user);
    let parts = state.authorization(&meta);
    match authorization::begin(&parts, query.as_deref().unwrap_or(""), user.as_ref()).await? {
        Ok(begun) => {
            // Only this browser may continue the request on the login and consent pages.
            session.add_request(&hex::encode(begun.handle.digest())).await?;
            Ok(see_other(&begun.location))
        }
        Err(refusal) => Ok(see_other(&refusal)),
    }
}
