//! `POST /login/upstream/{name}` (a button on the login page) and
//! `GET /login/upstream/{name}/callback` (where the identity provider sends the person back):
//! the round trip of `federation`, then the pending authorization request, as after a password.

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::browser::{self, go, see_other};
use super::extract::{ApplicationForm, CheckedForm};
use super::pages::PageError;
use crate::grant::authorization;
use crate::platform::audit::RequestMeta;
use crate::signin::federation::Callback;
use crate::signin::journey::FirstFactor;
use crate::signin::session::BrowserSession;
use crate::state::AppState;

pub async fn start(
    State(state): State<AppState>,
    session: BrowserSession,
    Path(name): Path<String>,
    CheckedForm(params, _): CheckedForm<ApplicationForm>,
) -> Result<Response, PageError> {
    let request = params.get("request");
    if let Some(handle) = request
        && (!authorization::valid_handle(handle) || !session.owns_request(handle).await?)
    {
        return Err(PageError::expired_request());
    }
    let (location, pending) = state.federation.begin(&state.pool, &name, request).await?;
    session.start_upstream_login(&pending).await?;
    Ok(see_other(&location))
}

pub async fn callback(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: BrowserSession,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = browser::query_params(query.as_deref())?;
    // Taken before anything else: a replayed or second callback finds nothing.
    let pending = session.take_upstream_login().await?;
    let callback = Callback {
        state: params.get("state"),
        code: params.get("code"),
        error: params.get("error"),
        iss: params.get("iss"),
    };
    let done = state.federation.finish(&state.pool, &state.audit, &meta, &name, pending, callback).await?;
    let step = browser::journey(&state, &session, &meta, &headers)
        .first_factor(&done.user, FirstFactor::Upstream, done.request.as_deref())
        .await?;
    Ok(go(&state.settings.issuer, step))
}
