//! Extractors for the back-channel endpoints: the strict form (RFC 6749 §3.2: urlencoded, no
//! repeated parameter) and the authenticated caller (RFC 6749 §2.3) of `/token`, `/revoke` and
//! `/introspect`, each within its per-client rate limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, header};

use super::browser::form;
use crate::catalog::resources::Resource;
use crate::clients::{Client, LookupError};
use crate::oauth::client_auth::Presented;
use crate::oauth::params::Params;
use crate::oauth::{ErrorCode, OAuthError};
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::platform::rate_limit::Route;
use crate::state::AppState;
use crate::web::error::ApiError;

impl From<LookupError> for ApiError {
    /// A metadata document that cannot be used makes the client unknown: `invalid_client`.
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Database(e) => e.into(),
            LookupError::Document(e) => OAuthError::invalid_client(e.to_string()).into(),
        }
    }
}

/// A form body as the token, revocation and introspection endpoints need it.
pub struct OAuthForm(pub Params);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            let description = if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body exceeds {} bytes", super::MAX_BODY)
            } else {
                format!("the request body could not be read: {}", e.body_text())
            };
            ApiError::new(e.status(), "invalid_request", description)
        })?;
        let params = form(content_type.as_ref(), &body)
            .map_err(|e| ApiError::from(OAuthError::invalid_request(e.to_string())))?;
        Ok(Self(params))
    }
}

/// The request's metadata, its `Authorization` header and its form, read from one request.
async fn read(req: Request, state: &AppState) -> Result<(RequestMeta, Option<HeaderValue>, Params), ApiError> {
    let (mut parts, body) = req.into_parts();
    let Ok(meta) = RequestMeta::from_request_parts(&mut parts, state).await;
    let authorization = parts.headers.get(header::AUTHORIZATION).cloned();
    let OAuthForm(params) = OAuthForm::from_request(Request::from_parts(parts, body), state).await?;
    Ok((meta, authorization, params))
}

/// The client credentials presented, in the header (`client_secret_basic`) or the form.
fn presented(authorization: Option<&HeaderValue>, params: &Params) -> Result<Presented, ApiError> {
    let authorization = authorization.map(|v| v.to_str().unwrap_or(""));
    Ok(Presented::from_request(authorization, params)?)
}

/// Authenticate the client a request presents (RFC 6749 §2.3), within its per-client rate
/// limit. An unknown client is `invalid_client`, so a client deleted meanwhile knows to register
/// again.
async fn authenticate_client(
    state: &AppState,
    meta: &RequestMeta,
    authorization: Option<&HeaderValue>,
    params: &Params,
    route: Route,
) -> Result<Arc<Client>, ApiError> {
    let presented = presented(authorization, params)?;
    client_limit(state, meta, route, presented.client_id()).await?;
    let client =
        state.clients.find(presented.client_id()).await?.ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    presented.verify(client.secret_hash.as_deref())?;
    Ok(client)
}

/// The per-client rate limit, counted before the credentials are checked (so guessing one
/// client's secret is limited too).
async fn client_limit(state: &AppState, meta: &RequestMeta, route: Route, client_id: &str) -> Result<(), ApiError> {
    match state.limits.check_client(route, client_id) {
        Ok(()) => Ok(()),
        Err(wait) => {
            crate::platform::metrics::rate_limited(route.name());
            let event =
                Event::new("rate_limit.hit", Outcome::RateLimited).during(meta).client(client_id).detail(route.name());
            state.audit.record(event).await;
            Err(ApiError::too_many_requests(wait))
        }
    }
}

/// A token request (RFC 6749 §3.2): a supported `grant_type` (checked before the client, so an
/// unsupported one is named as such), and the client that may use it, authenticated.
pub struct TokenRequest {
    pub grant_type: &'static str,
    pub client: Arc<Client>,
    pub params: Params,
}

/// Why a token request was refused before any grant ran, with the client it named (for the audit
/// record).
pub struct TokenRefusal {
    pub client_id: Option<String>,
    pub error: ApiError,
}

/// (The token endpoint takes the refusal itself, to audit it; this is for any other use.)
impl axum::response::IntoResponse for TokenRefusal {
    fn into_response(self) -> axum::response::Response {
        self.error.into_response()
    }
}

impl From<ApiError> for TokenRefusal {
    fn from(error: ApiError) -> Self {
        Self { client_id: None, error }
    }
}

impl FromRequest<AppState> for TokenRequest {
    type Rejection = TokenRefusal;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (meta, authorization, params) = read(req, state).await?;
        let grant_type = match params.get("grant_type") {
            Some("authorization_code") => "authorization_code",
            Some("refresh_token") => "refresh_token",
            Some("client_credentials") => "client_credentials",
            Some(other) => {
                let e =
                    OAuthError::new(ErrorCode::UnsupportedGrantType, format!("grant_type {other} is not supported"));
                return Err(TokenRefusal { client_id: params.get("client_id").map(str::to_owned), error: e.into() });
            }
            None => return Err(ApiError::from(OAuthError::invalid_request("grant_type is required")).into()),
        };
        let client = match authenticate_client(state, &meta, authorization.as_ref(), &params, Route::Token).await {
            Ok(client) => client,
            Err(error) => return Err(TokenRefusal { client_id: params.get("client_id").map(str::to_owned), error }),
        };
        if !client.has_grant(grant_type) {
            let e = OAuthError::new(ErrorCode::UnauthorizedClient, format!("this client may not use {grant_type}"));
            return Err(TokenRefusal { client_id: Some(client.client_id.clone()), error: e.into() });
        }
        Ok(Self { grant_type, client, params })
    }
}

/// A revocation request (RFC 7009 §2.1): the client authenticated, and its form.
pub struct RevocationRequest {
    pub client: Arc<Client>,
    pub params: Params,
}

impl FromRequest<AppState> for RevocationRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (meta, authorization, params) = read(req, state).await?;
        let client = authenticate_client(state, &meta, authorization.as_ref(), &params, Route::Revoke).await?;
        Ok(Self { client, params })
    }
}

/// Who asks the introspection endpoint.
pub enum Caller {
    Resource(Arc<Resource>),
    Client(Arc<Client>),
}

/// An introspection request (RFC 7662 §2.1): resource-server credentials first, then
/// confidential clients; a public client cannot call.
pub struct IntrospectionRequest {
    pub caller: Caller,
    pub params: Params,
}

impl FromRequest<AppState> for IntrospectionRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (meta, authorization, params) = read(req, state).await?;
        let caller = introspection_caller(state, &meta, authorization.as_ref(), &params).await?;
        Ok(Self { caller, params })
    }
}

async fn introspection_caller(
    state: &AppState,
    meta: &RequestMeta,
    authorization: Option<&HeaderValue>,
    params: &Params,
) -> Result<Caller, ApiError> {
    let presented = presented(authorization, params)?;
    client_limit(state, meta, Route::Introspect, presented.client_id()).await?;
    let resource = state.resources.load().by_credential(presented.client_id()).cloned();
    if let Some(resource) = resource {
        presented.verify(resource.credential_secret_hash.as_deref())?;
        return Ok(Caller::Resource(resource));
    }
    let client =
        state.clients.find(presented.client_id()).await?.ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    if client.secret_hash.is_none() {
        return Err(OAuthError::invalid_client(
            "introspection requires resource-server or confidential-client credentials",
        )
        .into());
    }
    presented.verify(client.secret_hash.as_deref())?;
    Ok(Caller::Client(client))
}
