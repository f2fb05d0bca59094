//! `POST /login/upstream/{name}` (a button on the login page) and
//! `GET /login/upstream/{name}/callback` (where the identity provider sends the person back):
//! the round trip of `federation`, then the pending authorization request, as after a password.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use tower_sessions::Session;

use super::browser::{self, SessionUser, see_other};
use super::pages::PageError;
use crate::grant::authorization;
use crate::oauth::secret;
use crate::platform::audit::RequestMeta;
use crate::signin::federation::Callback;
use crate::state::AppState;

pub async fn start(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let expired = "This form expired. Go back to the application and start again.";
    let params = browser::checked_form(&state.settings.issuer, &session, &headers, &body, expired).await?;
    let request = params.get("request");
    if let Some(handle) = request
        && (!authorization::valid_handle(handle)
            || !browser::owns_request(&session, &hex::encode(secret::digest(handle))).await?)
    {
        return Err(PageError::expired_request());
    }
    let (location, pending) = state.federation.begin(&state.pool, &name, request).await?;
    browser::start_upstream_login(&session, &pending).await?;
    Ok(see_other(&location))
}

pub async fn callback(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = browser::query_params(query.as_deref())?;
    // Taken before anything else: a replayed or second callback finds nothing.
    let pending = browser::take_upstream_login(&session).await?;
    let callback = Callback {
        state: params.get("state"),
        code: params.get("code"),
        error: params.get("error"),
        iss: params.get("iss"),
    };
    let done = state.federation.finish(&state.pool, &state.audit, &meta, &name, pending, callback).await?;
    let signed_in = SessionUser::signed_in_now(&done.user).from_device(&meta, browser::user_agent(&headers));
    browser::log_in(&session, signed_in.clone()).await?;
    // Signed in for no application: the person's own page.
    let Some(handle) = done.request else { return Ok(see_other(&state.settings.issuer.join("/account"))) };
    if !browser::owns_request(&session, &hex::encode(secret::digest(&handle))).await? {
        return Err(PageError::expired_request());
    }
    let resources = state.resources.load();
    let location = authorization::signed_in_for(&state.authorization(&meta, &resources), &handle, &signed_in).await?;
    Ok(see_other(&location))
}
