//! The authorization request (RFC 6749 §4.1.1, OAuth 2.1, RFC 7636, RFC 8707, RFC 9207): validate
//! it, decide the next step (login, consent, issue, deny), issue the code, and build the URL the
//! browser takes next. The login and consent pages call in here too; `http/` only parses,
//! calls and renders.
//!
//! Until the client and its redirect URI are known to be valid, every error is shown to the
//! person ([`AuthorizeError::Invalid`]): an unvalidated redirect would make Tessera an open
//! redirector. After that, errors go back to the client's redirect URI with `error`,
//! `error_description`, `state` and `iss`.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::clients::{Client, Clients, LookupError};
use crate::config::Issuer;
use crate::oauth::params::Params;
use crate::oauth::scope::OFFLINE_ACCESS;
use crate::oauth::secret::{self, Secret};
use crate::oauth::{ErrorCode, OAuthError, pkce, redirect_uri, scope};
use crate::resources::{Resource, ResourceSet, requested_scopes};
use crate::store::{authz_requests, grants};

pub use crate::store::authz_requests::AuthzRequest;

const OFFLINE_DESCRIPTION: &str = "Keep access while you are away (it receives a refresh token)";

/// What the authorization endpoint and its pages need from the server, for one request.
pub struct Parts<'a> {
    pub pool: &'a PgPool,
    pub clients: &'a Clients,
    pub resources: &'a ResourceSet,
    pub audit: &'a AuditSink,
    pub issuer: &'a Issuer,
    pub meta: &'a RequestMeta,
}

/// Why the browser cannot be sent on.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// Not redirectable (no client, unknown client, unregistered redirect URI, malformed
    /// request): shown to the person as it is.
    #[error("{0}")]
    Invalid(String),
    /// The pending request expired, was used, or is not this browser's or this user's.
    #[error("the sign-in request has expired or was already used")]
    Expired,
    #[error(transparent)]
    Client(#[from] LookupError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(message: impl Into<String>) -> AuthorizeError {
    AuthorizeError::Invalid(message.into())
}

/// A validation failure: shown to the person, or sent back to the client.
#[derive(Debug)]
pub enum Rejection {
    Page(AuthorizeError),
    Redirect { client_id: String, redirect_uri: String, state: Option<String>, error: OAuthError },
}

/// A request handle as it appears in a URL: 43 base64url characters.
pub fn valid_handle(handle: &str) -> bool {
    handle.len() == 43 && handle.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Step 1: the `client_id` a request names. Neither it nor `redirect_uri` may be repeated.
pub fn client_id(params: &Params) -> Result<&str, AuthorizeError> {
    for name in ["client_id", "redirect_uri"] {
        if params.is_repeated(name) {
            return Err(invalid(format!("The parameter {name} appears more than once.")));
        }
    }
    params.get("client_id").ok_or_else(|| invalid("The authorization request has no client_id."))
}

/// Steps 2–3 for a known client: its redirect URI, then everything else.
pub fn validate(params: &Params, client: &Client, resources: &ResourceSet) -> Result<AuthzRequest, Rejection> {
    let (redirect_uri, redirect_uri_sent) = match params.get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| redirect_uri::matches(r, uri)) => (uri.to_owned(), true),
        Some(_) => return Err(Rejection::Page(invalid("The redirect_uri is not one this application registered."))),
        None => match client.redirect_uris.as_slice() {
            [only] => (only.clone(), false),
            _ => {
                return Err(Rejection::Page(invalid(
                    "The authorization request has no redirect_uri, and the application registered more than one.",
                )));
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
    let checked = check_parameters(params, client, resources).map_err(fail)?;
    Ok(AuthzRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_sent,
        state: client_state,
        code_challenge: checked.code_challenge,
        resource_id: checked.resource.id,
        scopes: checked.scopes,
        prompt: checked.prompt,
        user_id: None,
        authenticated_at: None,
    })
}

struct Checked {
    code_challenge: String,
    resource: Arc<Resource>,
    scopes: Vec<String>,
    prompt: Vec<String>,
}

/// Everything after the redirect URI, each failure an error for the client.
fn check_parameters(params: &Params, client: &Client, resources: &ResourceSet) -> Result<Checked, OAuthError> {
    if let Some(name) = params.first_repeated() {
        return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
    }
    match params.get("response_type") {
        Some("code") => {}
        None => return Err(OAuthError::invalid_request("response_type is required")),
        Some(_) => {
            return Err(OAuthError::new(ErrorCode::UnsupportedResponseType, "only response_type=code is supported"));
        }
    }
    if !client.has_grant("authorization_code") {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code flow",
        ));
    }
    let code_challenge = pkce::parse_challenge(params.get("code_challenge"), params.get("code_challenge_method"))
        .map_err(OAuthError::invalid_request)?;
    let resource = resources.resolve(client, params.get("resource"))?;
    let scopes = requested_scopes(&resource, params.get("scope"), true)?;
    let prompt = parse_prompt(params.get("prompt"))?;
    Ok(Checked { code_challenge, resource, scopes, prompt })
}

/// `prompt` values Tessera acts on (others are ignored); `none` stands alone.
pub fn parse_prompt(raw: Option<&str>) -> Result<Vec<String>, OAuthError> {
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

/// What happens next to a pending request.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Login,
    Consent,
    Issue,
    Deny(OAuthError),
}

/// Whether the user's earlier approval (`consented`: the scopes approved for this client and
/// resource) covers this request. Self-registered clients never skip the consent page.
pub fn already_approved(request: &AuthzRequest, client: &Client, consented: Option<&[String]>) -> bool {
    !client.is_self_registered() && consented.is_some_and(|c| scope::is_subset(&request.scopes, c))
}

/// The decision. A user bound to the request is signed in for it, unless `prompt=login` asks
/// for a sign-in that has not happened yet; `approved` is [`already_approved`] for that user.
pub fn next_step(request: &AuthzRequest, approved: bool) -> Step {
    let signed_in = request.user_id.is_some() && (!has_prompt(request, "login") || request.authenticated_at.is_some());
    let prompt_none = has_prompt(request, "none");
    if !signed_in {
        return if prompt_none {
            Step::Deny(OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in"))
        } else {
            Step::Login
        };
    }
    let needs_consent = has_prompt(request, "consent") || !approved;
    match (needs_consent, prompt_none) {
        (false, _) => Step::Issue,
        (true, false) => Step::Consent,
        (true, true) => {
            Step::Deny(OAuthError::new(ErrorCode::ConsentRequired, "the user has not approved this access"))
        }
    }
}

/// A request that [`begin`] accepted: its handle (for the browser's session) and where the
/// browser goes next.
pub struct Begun {
    pub handle: Secret,
    pub location: String,
}

/// `GET /authorize`: validate the request, store it, and send the browser on. `Ok(Err(url))`
/// is a refusal sent back to the client; `user` is the browser's signed-in user.
pub async fn begin(p: &Parts<'_>, query: &str, user: Option<Uuid>) -> Result<Result<Begun, String>, AuthorizeError> {
    let request = match validated(p, query).await {
        Ok(request) => request,
        Err(Rejection::Page(e)) => {
            let event = Event::new("authorization.denied", Outcome::Denied)
                .during(p.meta)
                .detail("invalid client or redirect_uri");
            p.audit.record(event).await;
            return Err(e);
        }
        Err(Rejection::Redirect { client_id, redirect_uri, state, error }) => {
            let event = Event::new("authorization.denied", Outcome::Denied)
                .during(p.meta)
                .client(client_id)
                .detail(error.code.as_str());
            p.audit.record(event).await;
            return Ok(Err(error_location(p.issuer, &redirect_uri, state.as_deref(), &error)));
        }
    };
    let handle = Secret::generate();
    let digest = handle.digest();
    authz_requests::insert(p.pool, &digest, &request).await?;
    let mut request = request;
    // A signed-in browser approves as its user, unless the client asks to sign in again.
    if let Some(user) = user
        && !has_prompt(&request, "login")
    {
        authz_requests::bind_user(p.pool, &digest, user, None).await?;
        request.user_id = Some(user);
    }
    let location = advance(p, handle.expose(), request).await?;
    Ok(Ok(Begun { handle, location }))
}

async fn validated(p: &Parts<'_>, query: &str) -> Result<AuthzRequest, Rejection> {
    let params = Params::parse(query.as_bytes())
        .map_err(|e| Rejection::Page(invalid(format!("The authorization request is malformed: {e}."))))?;
    let client_id = client_id(&params).map_err(Rejection::Page)?;
    let client = p.clients.find(client_id).await.map_err(|e| Rejection::Page(e.into()))?.ok_or_else(|| {
        Rejection::Page(invalid(
            "The application that sent you here is not registered with this server (unknown client_id).",
        ))
    })?;
    validate(&params, &client, p.resources)
}

/// The login page has signed `user` in for the pending request `handle`.
pub async fn signed_in_for(p: &Parts<'_>, handle: &str, user: Uuid) -> Result<String, AuthorizeError> {
    let digest = secret::digest(handle);
    if !authz_requests::bind_user(p.pool, &digest, user, Some(chrono::Utc::now())).await? {
        return Err(AuthorizeError::Expired);
    }
    let request = authz_requests::get(p.pool, &digest).await?.ok_or(AuthorizeError::Expired)?;
    advance(p, handle, request).await
}

/// Take the next step for a stored request; where the browser goes.
async fn advance(p: &Parts<'_>, handle: &str, request: AuthzRequest) -> Result<String, AuthorizeError> {
    let approved = match request.user_id {
        Some(user) => {
            let client = registered_client(p, &request.client_id).await?;
            let consented = grants::consented_scopes(p.pool, user, &request.client_id, request.resource_id).await?;
            already_approved(&request, &client, consented.as_deref())
        }
        None => false,
    };
    let step = next_step(&request, approved);
    let user = match (&step, request.user_id) {
        (Step::Login, _) => return Ok(format!("{}?request={handle}", p.issuer.join("/login"))),
        (Step::Consent, _) => return Ok(format!("{}?request={handle}", p.issuer.join("/consent"))),
        (Step::Deny(error), None) => return Ok(deny(p, &request, None, error.clone()).await),
        (_, Some(user)) => user,
        // next_step issues only to a signed-in user.
        (Step::Issue, None) => return Err(AuthorizeError::Expired),
    };
    // Answered now (prompt=none) or issued now: the request is used up here.
    let claimed = authz_requests::claim(p.pool, &secret::digest(handle), user).await?.ok_or(AuthorizeError::Expired)?;
    match step {
        Step::Deny(error) => Ok(deny(p, &claimed, Some(user), error).await),
        _ => Ok(issue_code(p, &claimed, user).await?),
    }
}

/// The client of a pending request, still registered (or its document still valid).
async fn registered_client(p: &Parts<'_>, client_id: &str) -> Result<Arc<Client>, AuthorizeError> {
    p.clients.find(client_id).await?.ok_or_else(|| invalid("The application is no longer registered."))
}

/// The client's name, for "to continue to ..." on the login page.
pub async fn pending_client_name(p: &Parts<'_>, handle: &str) -> Result<Option<String>, AuthorizeError> {
    if !valid_handle(handle) {
        return Err(AuthorizeError::Expired);
    }
    let request = authz_requests::get(p.pool, &secret::digest(handle)).await?.ok_or(AuthorizeError::Expired)?;
    Ok(p.clients.find(&request.client_id).await?.map(|c| c.client_name.clone()))
}

/// What the consent page shows about a pending request.
pub struct ConsentView {
    pub client: Arc<Client>,
    pub resource: Arc<Resource>,
    /// Each scope with its description.
    pub scopes: Vec<(String, String)>,
    pub redirect_host: String,
    /// For a metadata-document client, the host of its document.
    pub metadata_document_host: Option<String>,
    /// A self-registered client whose every redirect URI is on this computer.
    pub localhost_only: bool,
}

/// The consent page's view of the request `handle`, pending for `user`.
pub async fn consent_view(p: &Parts<'_>, handle: &str, user: Uuid) -> Result<ConsentView, AuthorizeError> {
    let request = match authz_requests::get(p.pool, &secret::digest(handle)).await? {
        Some(r) if r.user_id == Some(user) => r,
        _ => return Err(AuthorizeError::Expired),
    };
    let client = registered_client(p, &request.client_id).await?;
    let resource = p.resources.by_id(request.resource_id).cloned().ok_or(AuthorizeError::Expired)?;
    let scopes = request
        .scopes
        .iter()
        .map(|s| {
            let description = if s == OFFLINE_ACCESS {
                OFFLINE_DESCRIPTION.to_owned()
            } else {
                resource.scopes.get(s).cloned().unwrap_or_default()
            };
            (s.clone(), description)
        })
        .collect();
    Ok(ConsentView {
        metadata_document_host: (client.origin == "cimd").then(|| redirect_uri::display_host(&client.client_id)),
        localhost_only: client.is_self_registered() && redirect_uri::all_loopback(&client.redirect_uris),
        redirect_host: redirect_uri::display_host(&request.redirect_uri),
        client,
        resource,
        scopes,
    })
}

/// The person's answer on the consent page; where the browser goes (back to the client).
pub async fn decide(p: &Parts<'_>, handle: &str, user: Uuid, allow: bool) -> Result<String, AuthorizeError> {
    // The decision uses the request up: a second submission finds nothing.
    let request = authz_requests::claim(p.pool, &secret::digest(handle), user).await?.ok_or(AuthorizeError::Expired)?;
    if !allow {
        let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
        return Ok(deny(p, &request, Some(user), error).await);
    }
    grants::remember_consent(p.pool, user, &request.client_id, request.resource_id, &request.scopes).await?;
    let mut event = Event::new("consent.granted", Outcome::Success)
        .during(p.meta)
        .client(&request.client_id)
        .subject(user.to_string())
        .scopes(scope::join(&request.scopes));
    if let Some(resource) = p.resources.by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    p.audit.record(event).await;
    Ok(issue_code(p, &request, user).await?)
}

/// Audit a refusal of a validated request; the URL that tells the client.
async fn deny(p: &Parts<'_>, request: &AuthzRequest, user: Option<Uuid>, error: OAuthError) -> String {
    let mut event = Event::new("authorization.denied", Outcome::Denied)
        .during(p.meta)
        .client(&request.client_id)
        .scopes(scope::join(&request.scopes))
        .detail(error.code.as_str());
    if let Some(user) = user {
        event = event.subject(user.to_string());
    }
    if let Some(resource) = p.resources.by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    p.audit.record(event).await;
    error_location(p.issuer, &request.redirect_uri, request.state.as_deref(), &error)
}

/// Create the grant and its code; the URL that hands the code to the client.
async fn issue_code(p: &Parts<'_>, request: &AuthzRequest, user_id: Uuid) -> Result<String, sqlx::Error> {
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
    grants::create_with_code(p.pool, &new).await?;
    let mut event = Event::new("authorization.approved", Outcome::Success)
        .during(p.meta)
        .client(&request.client_id)
        .subject(user_id.to_string())
        .scopes(scope::join(&request.scopes))
        .digest(new.code_hash)
        .detail(format!("grant {}", new.grant_id));
    if let Some(resource) = p.resources.by_id(request.resource_id) {
        event = event.resource(&resource.uri);
    }
    p.audit.record(event).await;
    let mut params = vec![("code", code.expose())];
    if let Some(st) = request.state.as_deref() {
        params.push(("state", st));
    }
    params.push(("iss", p.issuer.as_str()));
    Ok(with_query(&request.redirect_uri, &params))
}

/// An error for the client at its (validated) redirect URI, with `state` and `iss` (RFC 9207).
pub fn error_location(issuer: &Issuer, redirect_uri: &str, client_state: Option<&str>, error: &OAuthError) -> String {
    let mut params = vec![("error", error.code.as_str()), ("error_description", &*error.description)];
    if let Some(st) = client_state {
        params.push(("state", st));
    }
    params.push(("iss", issuer.as_str()));
    with_query(redirect_uri, &params)
}

/// Append parameters to a URI that may already have a query.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
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

    fn request(prompt: &[&str], user: bool, authenticated: bool) -> AuthzRequest {
        AuthzRequest {
            client_id: "c".into(),
            redirect_uri: "http://127.0.0.1/cb".into(),
            redirect_uri_sent: true,
            state: None,
            code_challenge: "x".into(),
            resource_id: Uuid::nil(),
            scopes: vec!["tools:read".into()],
            prompt: prompt.iter().map(|p| (*p).to_owned()).collect(),
            user_id: user.then(Uuid::nil),
            authenticated_at: authenticated.then(chrono::Utc::now),
        }
    }

    #[test]
    fn the_next_step() {
        use ErrorCode::{ConsentRequired, LoginRequired};
        let deny = |code| Step::Deny(OAuthError::new(code, ""));
        // (prompt, user bound, signed in for this request, already approved) -> step
        let table: &[(&[&str], bool, bool, bool, Step)] = &[
            (&[], false, false, false, Step::Login),
            (&[], false, false, true, Step::Login),
            (&["none"], false, false, true, deny(LoginRequired)),
            (&[], true, false, true, Step::Issue),
            (&[], true, false, false, Step::Consent),
            (&["none"], true, false, true, Step::Issue),
            (&["none"], true, false, false, deny(ConsentRequired)),
            (&["login"], true, false, true, Step::Login),
            (&["login"], true, true, true, Step::Issue),
            (&["login"], true, true, false, Step::Consent),
            (&["consent"], true, false, true, Step::Consent),
            (&["consent", "login"], true, false, true, Step::Login),
            (&["consent", "login"], true, true, true, Step::Consent),
        ];
        for (prompt, user, authenticated, approved, expected) in table {
            let step = next_step(&request(prompt, *user, *authenticated), *approved);
            let same = match (&step, expected) {
                (Step::Deny(a), Step::Deny(b)) => a.code == b.code,
                (a, b) => a == b,
            };
            assert!(same, "{prompt:?} user={user} authenticated={authenticated} approved={approved}: {step:?}");
        }
    }

    #[test]
    fn earlier_approvals_count_for_operator_clients_only() {
        let r = request(&[], true, false);
        let mut admin = Client::new("c".into(), "C".into(), "admin");
        let wider = ["tools:read".to_owned(), "tools:write".to_owned()];
        assert!(already_approved(&r, &admin, Some(&wider)));
        assert!(!already_approved(&r, &admin, Some(&["tools:write".to_owned()])));
        assert!(!already_approved(&r, &admin, None));
        admin.origin = "dcr".into();
        assert!(!already_approved(&r, &admin, Some(&wider)), "self-registered clients always ask");
    }

    #[test]
    fn prompt_values() {
        assert_eq!(parse_prompt(Some("login consent")).unwrap(), ["consent", "login"]);
        assert_eq!(parse_prompt(Some("select_account")).unwrap(), Vec::<String>::new());
        assert!(parse_prompt(Some("none login")).is_err());
    }
}
