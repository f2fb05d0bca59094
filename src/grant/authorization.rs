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

use crate::catalog::resources::{Resource, ResourceSet, requested_scopes};
use crate::clients::{Client, Clients, LookupError};
use crate::config::Issuer;
use crate::oauth::params::Params;
use crate::oauth::scope::{EMAIL, OFFLINE_ACCESS, OPENID, PROFILE};
use crate::oauth::secret::{self, Secret};
use crate::oauth::{ErrorCode, OAuthError, pkce, redirect_uri, scope};
use crate::openid;
use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::signin::authentication::SessionUser;
use crate::store::{authz_requests, grants};
use crate::tokens::keys::KeyRing;

pub use crate::store::authz_requests::AuthzRequest;

/// What the consent page says of the scopes every resource offers.
fn common_scope_description(scope: &str) -> Option<&'static str> {
    Some(match scope {
        OFFLINE_ACCESS => "Keep access while you are away (it receives a refresh token)",
        OPENID => "Know who you are: your account id on this server",
        PROFILE => "See your username and your name",
        EMAIL => "See your email address, and whether it is verified",
        _ => return None,
    })
}

/// Longest `nonce` and `login_hint` accepted.
const MAX_NONCE: usize = 512;
const MAX_LOGIN_HINT: usize = 254;

/// What the authorization endpoint and its pages need from the server, for one request.
pub struct Parts<'a> {
    pub pool: &'a PgPool,
    pub clients: &'a Clients,
    /// The resources as this request found them (one snapshot for the whole request).
    pub resources: Arc<ResourceSet>,
    pub audit: &'a AuditSink,
    pub issuer: &'a Issuer,
    /// To read `id_token_hint`.
    pub keys: &'a KeyRing,
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
        nonce: checked.openid.nonce,
        max_age: checked.openid.max_age,
        login_hint: checked.openid.login_hint,
        auth_time: None,
        sid: None,
    })
}

struct Checked {
    code_challenge: String,
    resource: Arc<Resource>,
    scopes: Vec<String>,
    prompt: Vec<String>,
    openid: OpenIdParams,
}

/// The OpenID Connect parameters of a request (Core §3.1.2.1).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OpenIdParams {
    pub nonce: Option<String>,
    /// `max_age`, or the client's `default_max_age`.
    pub max_age: Option<i32>,
    pub login_hint: Option<String>,
}

/// `nonce`, `max_age` (else the client's default) and `login_hint`; `request`, `request_uri` and
/// `claims` are refused (not supported, and said so in the discovery document); `ui_locales`,
/// `claims_locales`, `display` and `acr_values` are accepted and have no effect.
pub fn openid_parameters(params: &Params, client: &Client) -> Result<OpenIdParams, OAuthError> {
    if params.get("request").is_some() {
        return Err(OAuthError::new(ErrorCode::RequestNotSupported, "request objects are not supported"));
    }
    if params.get("request_uri").is_some() {
        return Err(OAuthError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported"));
    }
    if params.get("claims").is_some() {
        return Err(OAuthError::invalid_request(
            "the claims parameter is not supported; ask for the profile and email scopes",
        ));
    }
    let nonce = params.get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.is_empty() || n.len() > MAX_NONCE) {
        return Err(OAuthError::invalid_request(format!("nonce must be 1 to {MAX_NONCE} characters")));
    }
    let max_age = match params.get("max_age") {
        Some(raw) => Some(parse_max_age(raw)?),
        None => openid::default_max_age(client),
    };
    let login_hint = params.get("login_hint").filter(|h| h.len() <= MAX_LOGIN_HINT && !h.is_empty()).map(str::to_owned);
    let max_age = max_age.map(|m| i32::try_from(m.min(openid::MAX_AGE_LIMIT)).unwrap_or(i32::MAX));
    Ok(OpenIdParams { nonce, max_age, login_hint })
}

fn parse_max_age(raw: &str) -> Result<i64, OAuthError> {
    if raw.is_empty() || raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OAuthError::invalid_request("max_age must be a non-negative number of seconds"));
    }
    Ok(raw.parse::<i64>().unwrap_or(i64::MAX))
}

/// Everything after the redirect URI, each failure an error for the client.
fn check_parameters(params: &Params, client: &Client, resources: &ResourceSet) -> Result<Checked, OAuthError> {
    if let Some(name) = params.first_repeated() {
        return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
    }
    let openid_params = openid_parameters(params, client)?;
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
    let openid = params.get("scope").is_some_and(|s| s.split(' ').any(|s| s == OPENID));
    let resource = resources.resolve(client, params.get("resource"), openid)?;
    let scopes = requested_scopes(&resource, params.get("scope"), true)?;
    let prompt = parse_prompt(params.get("prompt"))?;
    Ok(Checked { code_challenge, resource, scopes, prompt, openid: openid_params })
}

/// `prompt` values Tessera acts on (others are ignored); `none` stands alone. There is one
/// account per browser, so `select_account` asks for a sign-in, as `login` does.
pub fn parse_prompt(raw: Option<&str>) -> Result<Vec<String>, OAuthError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let mut prompt: Vec<String> = raw
        .split(' ')
        .filter(|p| matches!(*p, "none" | "login" | "consent" | "select_account"))
        .map(str::to_owned)
        .collect();
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

/// `prompt=login` or `prompt=select_account`: the person signs in for this request.
fn asks_for_sign_in(request: &AuthzRequest) -> bool {
    has_prompt(request, "login") || has_prompt(request, "select_account")
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
    let signed_in = request.user_id.is_some() && (!asks_for_sign_in(request) || request.authenticated_at.is_some());
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
pub async fn begin(
    p: &Parts<'_>,
    query: &str,
    user: Option<&SessionUser>,
) -> Result<Result<Begun, String>, AuthorizeError> {
    let (request, hint) = match validated(p, query).await {
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
    let mut request = request;
    if let Some(user) = user.filter(|u| session_counts(&request, u, hint.as_deref(), chrono::Utc::now())) {
        let binding = authz_requests::Binding {
            user_id: user.id,
            auth_time: user.authenticated_at(),
            sid: &user.sid,
            authenticated_at: None,
        };
        binding.apply_to(&mut request);
    }
    // Stored bound to the signed-in user, if there is one.
    authz_requests::insert(p.pool, &handle.digest(), &request).await?;
    let consented = match request.user_id {
        Some(user) => grants::consented_scopes(p.pool, user, &request.client_id, request.resource_id).await?,
        None => None,
    };
    let location = advance(p, handle.expose(), request, consented, None).await?;
    Ok(Ok(Begun { handle, location }))
}

/// Whether the browser's signed-in user approves this request without signing in again: the
/// client did not ask for a sign-in (`prompt`), the sign-in is recent enough (`max_age`), and
/// the user is the one the client's `id_token_hint` names (its subject, when it named one).
pub fn session_counts(
    request: &AuthzRequest,
    user: &SessionUser,
    hint_subject: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    !asks_for_sign_in(request)
        && openid::fresh_enough(user.authenticated_at(), request.max_age.map(i64::from), now)
        && hint_subject.is_none_or(|sub| sub == user.id.to_string())
}

/// A validated request, and the subject of its `id_token_hint` if it has one.
async fn validated(p: &Parts<'_>, query: &str) -> Result<(AuthzRequest, Option<String>), Rejection> {
    let params = Params::parse(query.as_bytes())
        .map_err(|e| Rejection::Page(invalid(format!("The authorization request is malformed: {e}."))))?;
    let client_id = client_id(&params).map_err(Rejection::Page)?;
    let client = p.clients.find(client_id).await.map_err(|e| Rejection::Page(e.into()))?.ok_or_else(|| {
        Rejection::Page(invalid(
            "The application that sent you here is not registered with this server (unknown client_id).",
        ))
    })?;
    let request = validate(&params, &client, &p.resources)?;
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(token) => match openid::read_hint(p.keys, p.issuer, token) {
            Ok(hint) => Some(hint.sub),
            Err(_) => {
                return Err(Rejection::Redirect {
                    client_id: request.client_id,
                    redirect_uri: request.redirect_uri,
                    state: request.state,
                    error: OAuthError::invalid_request("id_token_hint is not an ID token issued by this server"),
                });
            }
        },
    };
    Ok((request, hint))
}

/// The login page has signed `user` in for the pending request `handle`.
pub async fn signed_in_for(p: &Parts<'_>, handle: &str, user: &SessionUser) -> Result<String, AuthorizeError> {
    let (mut request, consented) = authz_requests::get_with_consent(p.pool, &secret::digest(handle), user.id)
        .await?
        .ok_or(AuthorizeError::Expired)?;
    let binding = authz_requests::Binding {
        user_id: user.id,
        auth_time: user.authenticated_at(),
        sid: &user.sid,
        authenticated_at: Some(chrono::Utc::now()),
    };
    binding.apply_to(&mut request);
    advance(p, handle, request, consented, Some(&binding)).await
}

/// Take the next step for a pending request; where the browser goes. `consented`: the scopes
/// its user approved before for its client and resource. `unsaved`: the binding `request`
/// carries that is not stored yet; it is stored with the step's own write (the claim that
/// issues the code, or the binding the login and consent pages need).
async fn advance(
    p: &Parts<'_>,
    handle: &str,
    request: AuthzRequest,
    consented: Option<Vec<String>>,
    unsaved: Option<&authz_requests::Binding<'_>>,
) -> Result<String, AuthorizeError> {
    let approved = match request.user_id {
        Some(_) => {
            let client = registered_client(p, &request.client_id).await?;
            already_approved(&request, &client, consented.as_deref())
        }
        None => false,
    };
    let digest = secret::digest(handle);
    let step = next_step(&request, approved);
    let page = match step {
        Step::Login => Some("/login"),
        Step::Consent => Some("/consent"),
        _ => None,
    };
    if let Some(page) = page {
        if let Some(binding) = unsaved
            && !authz_requests::bind_user(p.pool, &digest, binding).await?
        {
            return Err(AuthorizeError::Expired);
        }
        return Ok(format!("{}?request={handle}", p.issuer.join(page)));
    }
    let Some(user) = request.user_id else {
        return match step {
            Step::Deny(error) => Ok(deny(p, &request, None, error).await),
            // next_step issues only to a signed-in user.
            _ => Err(AuthorizeError::Expired),
        };
    };
    // Answered now (prompt=none) or issued now: the request is used up here.
    match step {
        Step::Deny(error) => {
            let claimed =
                authz_requests::claim(p.pool, &digest, user, unsaved).await?.ok_or(AuthorizeError::Expired)?;
            Ok(deny(p, &claimed, Some(user), error).await)
        }
        _ => {
            let claim = grants::RequestClaim { id_hash: &digest, binding: unsaved };
            issue_code(p, &request, user, Some(&claim)).await?.ok_or(AuthorizeError::Expired)
        }
    }
}

/// The client of a pending request, still registered (or its document still valid).
async fn registered_client(p: &Parts<'_>, client_id: &str) -> Result<Arc<Client>, AuthorizeError> {
    p.clients.find(client_id).await?.ok_or_else(|| invalid("The application is no longer registered."))
}

/// What the login page shows of a pending request.
pub struct PendingLogin {
    /// For "to continue to ...".
    pub client_name: Option<String>,
    /// The client's `login_hint`, to fill in the username.
    pub login_hint: Option<String>,
}

/// The login page's view of the pending request `handle`.
pub async fn pending_login(p: &Parts<'_>, handle: &str) -> Result<PendingLogin, AuthorizeError> {
    if !valid_handle(handle) {
        return Err(AuthorizeError::Expired);
    }
    let request = authz_requests::get(p.pool, &secret::digest(handle)).await?.ok_or(AuthorizeError::Expired)?;
    let client_name = p.clients.find(&request.client_id).await?.map(|c| c.client_name.clone());
    Ok(PendingLogin { client_name, login_hint: request.login_hint })
}

/// What the consent page shows about a pending request.
pub struct ConsentView {
    pub client: Arc<Client>,
    pub resource: Arc<Resource>,
    /// Each requested scope, as the page shows it.
    pub scopes: Vec<ConsentScope>,
    pub redirect_host: String,
    /// For a metadata-document client, the host of its document.
    pub metadata_document_host: Option<String>,
    /// A self-registered client whose every redirect URI is on this computer.
    pub localhost_only: bool,
}

/// A requested scope on the consent page: a checkbox, checked, that the person may uncheck
/// unless it is required.
#[derive(Clone, Debug)]
pub struct ConsentScope {
    pub name: String,
    pub description: String,
    pub details: Option<String>,
    /// The tools the scope unlocks.
    pub tools: Vec<String>,
    pub required: bool,
}

/// Whether the person may leave `scope` of `resource` unchecked: not `openid` (the sign-in an
/// OpenID application asked for), not a scope the resource marks required.
fn required_scope(resource: &Resource, scope: &str) -> bool {
    scope == scope::OPENID || resource.scope_details.get(scope).is_some_and(|d| d.required)
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
            let description = match common_scope_description(s) {
                Some(common) => common.to_owned(),
                None => resource.scopes.get(s).cloned().unwrap_or_default(),
            };
            let more = resource.scope_details.get(s).cloned().unwrap_or_default();
            ConsentScope {
                required: required_scope(&resource, s),
                name: s.clone(),
                description,
                details: more.details,
                tools: more.tools,
            }
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

/// The person's answer on the consent page.
#[derive(Clone, Debug)]
pub enum Decision {
    Deny,
    /// Allow; with `Some`, only the scopes left checked (required ones are granted regardless),
    /// with `None` every scope asked for.
    Allow(Option<Vec<String>>),
}

/// The person's answer on the consent page; where the browser goes (back to the client). The
/// grant gets the scopes the person left checked, and the token response says so (RFC 6749 §3.3).
pub async fn decide(p: &Parts<'_>, handle: &str, user: Uuid, decision: Decision) -> Result<String, AuthorizeError> {
    // The decision uses the request up: a second submission finds nothing.
    let mut request =
        authz_requests::claim(p.pool, &secret::digest(handle), user, None).await?.ok_or(AuthorizeError::Expired)?;
    let chosen = match decision {
        Decision::Deny => {
            let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
            return Ok(deny(p, &request, Some(user), error).await);
        }
        Decision::Allow(chosen) => chosen,
    };
    if let (Some(chosen), Some(resource)) = (chosen, p.resources.by_id(request.resource_id)) {
        request.scopes.retain(|s| required_scope(resource, s) || chosen.contains(s));
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
    issue_code(p, &request, user, None).await?.ok_or(AuthorizeError::Expired)
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

/// Create the grant and its code, using up the pending request in the same statement when
/// `claim` names it; the URL that hands the code to the client (`None`: the request was no
/// longer there to claim, and nothing was created).
async fn issue_code(
    p: &Parts<'_>,
    request: &AuthzRequest,
    user_id: Uuid,
    claim: Option<&grants::RequestClaim<'_>>,
) -> Result<Option<String>, sqlx::Error> {
    let code = Secret::generate();
    let new = grants::NewCode {
        // Time-ordered (UUIDv7): a new grant, and the refresh tokens and codes that name it, go to
        // the right-hand end of their indexes, which stay in memory however large the tables grow.
        grant_id: Uuid::now_v7(),
        client_id: &request.client_id,
        user_id,
        resource_id: request.resource_id,
        scopes: &request.scopes,
        code_hash: &code.digest(),
        redirect_uri: &request.redirect_uri,
        redirect_uri_sent: request.redirect_uri_sent,
        code_challenge: &request.code_challenge,
        nonce: request.nonce.as_deref(),
        auth_time: request.auth_time,
        sid: request.sid.as_deref(),
    };
    if !grants::create_with_code(p.pool, &new, claim).await? {
        return Ok(None);
    }
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
    Ok(Some(with_query(&request.redirect_uri, &params)))
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
pub fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
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
            nonce: None,
            max_age: None,
            login_hint: None,
            auth_time: None,
            sid: None,
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
        assert_eq!(parse_prompt(Some("select_account unknown")).unwrap(), ["select_account"]);
        assert!(parse_prompt(Some("none login")).is_err());
    }
}
