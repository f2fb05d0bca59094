//! `GET /authorize` (RFC 6749 §4.1.1, OAuth 2.1, RFC 7636, RFC 8707, RFC 9207), and what the
//! login and consent pages share with it: deciding the next step and issuing the code.
//!
//! Until the client and its redirect URI are known to be valid, every error is a page: an
//! unvalidated redirect would make Tessera an open redirector. After that, errors go back to the
//! client's redirect URI with `error`, `error_description`, `state` and `iss`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;
use uuid::Uuid;

use super::browser::{self, SessionUser};
use super::pages::PageError;
use crate::audit::{Event, Outcome};
use crate::clients::{self, Client};
use crate::oauth::params::Params;
use crate::oauth::scope::OFFLINE_ACCESS;
use crate::oauth::secret::Secret;
use crate::oauth::{ErrorCode, OAuthError, pkce, redirect_uri, resource, scope};
use crate::resources::Resource;
use crate::security::client_addr::RequestMeta;
use crate::state::AppState;
use crate::store::authz_requests::{self, AuthzRequest};
use crate::store::{grants, users};

/// Why a request cannot proceed: shown as a page, or sent back to the client.
pub enum Rejection {
    Page(PageError),
    Redirect { client_id: String, redirect_uri: String, state: Option<String>, error: OAuthError },
}

impl From<PageError> for Rejection {
    fn from(p: PageError) -> Self {
        Self::Page(p)
    }
}

pub async fn authorize(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    RawQuery(query): RawQuery,
) -> Response {
    let request = match validate(&state, query.as_deref().unwrap_or("")).await {
        Ok(request) => request,
        Err(rejection) => return reject(&state, &meta, rejection).await,
    };
    start(&state, &meta, &session, request).await
}

async fn reject(state: &AppState, meta: &RequestMeta, rejection: Rejection) -> Response {
    match rejection {
        Rejection::Page(page) => {
            let event = Event::new("authorization.denied", Outcome::Denied)
                .during(meta)
                .detail("invalid client or redirect_uri");
            state.audit.record(event).await;
            page.into_response()
        }
        Rejection::Redirect { client_id, redirect_uri, state: st, error } => {
            let event = Event::new("authorization.denied", Outcome::Denied)
                .during(meta)
                .client(client_id)
                .detail(error.code.as_str());
            state.audit.record(event).await;
            error_redirect(state, &redirect_uri, st.as_deref(), &error)
        }
    }
}

/// Audit a refusal of a validated request and send it back to the client.
pub async fn deny(
    state: &AppState,
    meta: &RequestMeta,
    request: &AuthzRequest,
    user: Option<Uuid>,
    error: OAuthError,
) -> Response {
    let mut event = Event::new("authorization.denied", Outcome::Denied)
        .during(meta)
        .client(&request.client_id)
        .scopes(scope::join(&request.scopes))
        .detail(error.code.as_str());
    if let Some(user) = user {
        event = event.subject(user.to_string());
    }
    if let Some(resource) = state.resources.load().by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    state.audit.record(event).await;
    error_redirect(state, &request.redirect_uri, request.state.as_deref(), &error)
}

/// Steps 1–3: the client, its redirect URI, then everything else.
async fn validate(state: &AppState, query: &str) -> Result<AuthzRequest, Rejection> {
    let base = state.settings.issuer.path();
    let params = Params::parse(query.as_bytes())
        .map_err(|e| PageError::bad_request(base, format!("The authorization request is malformed: {e}.")))?;
    for name in ["client_id", "redirect_uri"] {
        if params.is_repeated(name) {
            return Err(PageError::bad_request(base, format!("The parameter {name} appears more than once.")).into());
        }
    }
    let client_id = params
        .get("client_id")
        .ok_or_else(|| PageError::bad_request(base, "The authorization request has no client_id."))?;
    let client =
        clients::find(state, client_id).await.map_err(|e| PageError::client_lookup(base, e))?.ok_or_else(|| {
            PageError::bad_request(
                base,
                "The application that sent you here is not registered with this server (unknown client_id).",
            )
        })?;
    let (redirect_uri, redirect_uri_sent) = match params.get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| redirect_uri::matches(r, uri)) => (uri.to_owned(), true),
        Some(_) => {
            return Err(PageError::bad_request(base, "The redirect_uri is not one this application registered.").into());
        }
        None => match client.redirect_uris.as_slice() {
            [only] => (only.clone(), false),
            _ => {
                return Err(PageError::bad_request(
                    base,
                    "The authorization request has no redirect_uri, and the application registered more than one.",
                )
                .into());
            }
        },
    };

    let client_state = params.get("state").map(str::to_owned);
    let fail = |error: OAuthError| Rejection::Redirect {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        state: client_state.clone(),
        error,
    };

    if let Some(name) = params.first_repeated() {
        return Err(fail(OAuthError::invalid_request(format!("parameter {name} is repeated"))));
    }
    match params.get("response_type") {
        Some("code") => {}
        None => return Err(fail(OAuthError::invalid_request("response_type is required"))),
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
    }
    if !client.has_grant("authorization_code") {
        return Err(fail(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code flow",
        )));
    }
    let code_challenge = pkce::parse_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
        .map_err(|m| fail(OAuthError::invalid_request(m)))?;
    let resource = resolve_resource(state, &client, params.get("resource")).map_err(fail)?;
    let scopes = requested_scopes(&resource, params.get("scope"), true).map_err(fail)?;
    let prompt = parse_prompt(params.get("prompt")).map_err(fail)?;

    Ok(AuthzRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_sent,
        state: client_state,
        code_challenge,
        resource_id: resource.id,
        scopes,
        prompt,
        user_id: None,
        authenticated_at: None,
    })
}

/// The resource a request names (RFC 8707), or the default one when it names none.
pub fn resolve_resource(
    state: &AppState,
    client: &Client,
    requested: Option<&str>,
) -> Result<std::sync::Arc<Resource>, OAuthError> {
    let resources = state.resources.load();
    let resource = match requested {
        Some(raw) => {
            let canonical =
                resource::canonicalize(raw).map_err(|m| OAuthError::invalid_target(format!("resource {m}")))?;
            resources
                .by_uri(&canonical)
                .cloned()
                .ok_or_else(|| OAuthError::invalid_target("the resource is not registered with this server"))?
        }
        None => resources
            .default_resource()
            .cloned()
            .ok_or_else(|| OAuthError::invalid_target("resource is required (there is no default resource)"))?,
    };
    if !client.may_use_resource(resource.id) {
        return Err(OAuthError::invalid_target("this client may not obtain tokens for this resource"));
    }
    Ok(resource)
}

/// The scopes a request asks for: a subset of the resource's (plus `offline_access` where a
/// refresh token may follow), or the resource's default scopes when it names none.
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

fn parse_prompt(raw: Option<&str>) -> Result<Vec<String>, OAuthError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut prompt: Vec<String> =
        raw.split(' ').filter(|p| matches!(*p, "none" | "login" | "consent")).map(str::to_owned).collect();
    prompt.sort();
    prompt.dedup();
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
    }
    Ok(prompt)
}

fn has_prompt(request: &AuthzRequest, value: &str) -> bool {
    request.prompt.iter().any(|p| p == value)
}

/// The signed-in user of this browser, if the account still exists, is enabled, and has not
/// changed its password (or been disabled) since this session signed in.
pub async fn signed_in(state: &AppState, session: &Session) -> Result<Option<SessionUser>, sqlx::Error> {
    let Some(user) = browser::user(session).await else { return Ok(None) };
    let current = users::by_id(&state.pool, user.id).await?;
    Ok(current.filter(|u| !u.disabled && u.session_generation == user.generation).map(|_| user))
}

/// Store the validated request, then send the browser to login, consent, or straight back.
async fn start(state: &AppState, meta: &RequestMeta, session: &Session, request: AuthzRequest) -> Response {
    let base = state.settings.issuer.path();
    let handle = Secret::generate();
    let digest = handle.digest();
    if let Err(e) = authz_requests::insert(&state.pool, &digest, &request).await {
        return PageError::internal(base, e).into_response();
    }
    if let Err(e) = browser::add_request(session, &hex::encode(digest)).await {
        return PageError::internal(base, e).into_response();
    }
    let user = match signed_in(state, session).await {
        Ok(user) => user,
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    match user {
        Some(user) if !has_prompt(&request, "login") => {
            if let Err(e) = authz_requests::bind_user(&state.pool, &digest, user.id, None).await {
                return PageError::internal(base, e).into_response();
            }
            let request = AuthzRequest { user_id: Some(user.id), ..request };
            proceed(state, meta, handle.expose(), request, &user).await
        }
        _ if has_prompt(&request, "none") => {
            deny(state, meta, &request, None, OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in"))
                .await
        }
        _ => see_other(&format!("{}?request={}", state.settings.issuer.join("/login"), handle.expose())),
    }
}

/// The client of a pending request, still registered (or its document still valid).
pub async fn registered_client(state: &AppState, client_id: &str) -> Result<Arc<Client>, PageError> {
    let base = state.settings.issuer.path();
    match clients::find(state, client_id).await {
        Ok(Some(client)) => Ok(client),
        Ok(None) => Err(PageError::bad_request(base, "The application is no longer registered.")),
        Err(e) => Err(PageError::client_lookup(base, e)),
    }
}

/// With a signed-in user bound to the request: ask for consent, or issue the code at once when
/// the user already approved these scopes for this (operator-registered) client.
pub async fn proceed(
    state: &AppState,
    meta: &RequestMeta,
    handle: &str,
    request: AuthzRequest,
    user: &SessionUser,
) -> Response {
    let base = state.settings.issuer.path();
    let client = match registered_client(state, &request.client_id).await {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let consented = match grants::consented_scopes(&state.pool, user.id, &client.client_id, request.resource_id).await {
        Ok(c) => c,
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    let needs_consent = has_prompt(&request, "consent")
        || client.is_self_registered()
        || !consented.is_some_and(|c| scope::is_subset(&request.scopes, &c));
    let digest = crate::oauth::secret::digest(handle);
    if needs_consent && !has_prompt(&request, "none") {
        return see_other(&format!("{}?request={handle}", state.settings.issuer.join("/consent")));
    }
    // Either prompt=none (answered now) or no consent needed: the request is used up here.
    let claimed = match authz_requests::claim(&state.pool, &digest, user.id).await {
        Ok(Some(r)) => r,
        Ok(None) => return expired_request(base).into_response(),
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    if needs_consent {
        let error = OAuthError::new(ErrorCode::ConsentRequired, "the user has not approved this access");
        return deny(state, meta, &claimed, Some(user.id), error).await;
    }
    issue_code(state, meta, &claimed, user.id).await
}

pub fn expired_request(base: &str) -> PageError {
    PageError::bad_request(
        base,
        "This sign-in request has expired or was already used. Go back to the application and start again.",
    )
}

/// Create the grant and its code, and send the browser back to the client.
pub async fn issue_code(state: &AppState, meta: &RequestMeta, request: &AuthzRequest, user_id: Uuid) -> Response {
    let code = Secret::generate();
    let new = grants::NewCode {
        grant_id: Uuid::new_v4(),
        client_id: &request.client_id,
        user_id,
        resource_id: request.resource_id,
        scopes: &request.scopes,
        code_hash: &code.digest(),
        redirect_uri: &request.redirect_uri,
        redirect_uri_sent: request.redirect_uri_sent,
        code_challenge: &request.code_challenge,
    };
    if let Err(e) = grants::create_with_code(&state.pool, &new).await {
        return PageError::internal(state.settings.issuer.path(), e).into_response();
    }
    let mut event = Event::new("authorization.approved", Outcome::Success)
        .during(meta)
        .client(&request.client_id)
        .subject(user_id.to_string())
        .scopes(scope::join(&request.scopes))
        .digest(new.code_hash)
        .detail(format!("grant {}", new.grant_id));
    if let Some(resource) = state.resources.load().by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    state.audit.record(event).await;
    let mut params = vec![("code", code.expose())];
    if let Some(st) = request.state.as_deref() {
        params.push(("state", st));
    }
    params.push(("iss", state.settings.issuer.as_str()));
    see_other(&with_query(&request.redirect_uri, &params))
}

/// Send an error to the client's (validated) redirect URI, with `state` and `iss` (RFC 9207).
pub fn error_redirect(
    state: &AppState,
    redirect_uri: &str,
    client_state: Option<&str>,
    error: &OAuthError,
) -> Response {
    let mut params = vec![("error", error.code.as_str()), ("error_description", &*error.description)];
    if let Some(st) = client_state {
        params.push(("state", st));
    }
    params.push(("iss", state.settings.issuer.as_str()));
    see_other(&with_query(redirect_uri, &params))
}

/// Append parameters to a URI that may already have a query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
}

/// `303 See Other`: the browser follows with a GET, also after a form POST.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(header::LOCATION, value);
            res
        }
        Err(_) => crate::error::ApiError::internal("redirect location is not a valid header value").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_appending() {
        assert_eq!(
            with_query("https://a/cb", &[("code", "x y"), ("state", "s&t")]),
            "https://a/cb?code=x+y&state=s%26t"
        );
        assert_eq!(with_query("https://a/cb?k=v", &[("code", "x")]), "https://a/cb?k=v&code=x");
    }

    #[test]
    fn prompt_values() {
        assert_eq!(parse_prompt(Some("login consent")).unwrap(), ["consent", "login"]);
        assert_eq!(parse_prompt(Some("select_account")).unwrap(), Vec::<String>::new());
        assert!(parse_prompt(Some("none login")).is_err());
    }
}
