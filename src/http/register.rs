//! Dynamic client registration: `POST /register` (RFC 7591) and the client configuration
//! endpoint `GET/PUT/DELETE /register/{client_id}` (RFC 7592), under the registration policy
//! and a per-source-address rate limit.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;

use crate::clients::Client;
use crate::config::RegistrationPolicy;
use crate::oauth::registration::{self, Metadata, Source};
use crate::oauth::secret::{self, Secret};
use crate::oauth::{ErrorCode, OAuthError};
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::state::AppState;
use crate::store::{clients, registration_tokens};
use crate::web::error::ApiError;
use crate::web::headers::{Bearer, no_store};

/// Largest registration request.
pub const MAX_BODY: usize = 16 * 1024;

/// Read a body up to `limit` bytes: 413 beyond it.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {limit} bytes"),
        )
    })
}

fn invalid_token(description: &'static str) -> ApiError {
    let mut e = ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", description);
    e.challenge = Some("Bearer error=\"invalid_token\"");
    e
}

fn parse_json(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(OAuthError::new(ErrorCode::InvalidClientMetadata, "the body must be application/json").into());
    }
    serde_json::from_slice(body).map_err(|_| {
        OAuthError::new(ErrorCode::InvalidClientMetadata, "the body is not valid JSON (or is nested too deeply)").into()
    })
}

/// The client information response (RFC 7591 §3.2.1, RFC 7592 §3).
fn information(state: &AppState, client: &Client, secret: Option<&Secret>, registration_token: &str) -> Value {
    let mut out: Map<String, Value> = client.metadata.as_object().cloned().unwrap_or_default();
    out.insert("client_id".into(), json!(client.client_id));
    out.insert("client_id_issued_at".into(), json!(client.created_at.timestamp()));
    out.insert("client_name".into(), json!(client.client_name));
    out.insert("redirect_uris".into(), json!(client.redirect_uris));
    out.insert("grant_types".into(), json!(client.grant_types));
    out.insert("token_endpoint_auth_method".into(), json!(client.token_endpoint_auth_method));
    out.entry("response_types").or_insert_with(|| json!(["code"]));
    if let Some(secret) = secret {
        out.insert("client_secret".into(), json!(secret.expose()));
        out.insert("client_secret_expires_at".into(), json!(0));
    }
    out.insert("registration_access_token".into(), json!(registration_token));
    let uri = state.settings.issuer.join(&format!("/register/{}", client.client_id));
    out.insert("registration_client_uri".into(), json!(uri));
    Value::Object(out)
}

fn apply(client: &mut Client, m: Metadata) {
    if let Some(name) = m.client_name {
        client.client_name = name;
    }
    client.redirect_uris = m.redirect_uris;
    client.grant_types = m.grant_types;
    client.metadata = Value::Object(m.stored);
}

pub async fn create(State(state): State<AppState>, meta: RequestMeta, headers: HeaderMap, body: Body) -> Response {
    match register(&state, &meta, &headers, body).await {
        Ok((res, client_id, replaced)) => {
            let mut event = Event::new("client.registered", Outcome::Success).during(&meta).client(client_id);
            if !replaced.is_empty() {
                event = event.detail(format!("not supported, dropped: {}", replaced.join(", ")));
            }
            state.audit.record(event).await;
            res
        }
        Err(e) => {
            let event = if e.status == StatusCode::TOO_MANY_REQUESTS {
                Event::new("rate_limit.hit", Outcome::RateLimited).during(&meta).detail("register")
            } else {
                Event::new("client.registration_refused", Outcome::Denied).during(&meta).detail(e.code)
            };
            state.audit.record(event).await;
            e.into_response()
        }
    }
}

/// The answer, the new client's id, and what it asked for that was replaced.
async fn register(
    state: &AppState,
    meta: &RequestMeta,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Response, String, Vec<String>), ApiError> {
    if state.settings.registration == RegistrationPolicy::Closed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "access_denied",
            "client registration is closed on this server",
        ));
    }
    if let Err(wait) = state.limits.registration.check(&meta.source) {
        crate::platform::metrics::rate_limited("register");
        return Err(ApiError::too_many_requests(wait));
    }
    let body = read_body(body, MAX_BODY).await?;
    let doc = parse_json(headers, &body)?;
    let metadata = registration::parse(&doc, Source::Registration)?;
    if state.settings.registration == RegistrationPolicy::Token {
        let token = Bearer::from_headers(headers)
            .token()
            .ok_or_else(|| invalid_token("an initial access token is required to register"))?;
        if !registration_tokens::consume(&state.pool, &secret::digest(token)).await? {
            return Err(invalid_token("the initial access token is invalid, expired or used up"));
        }
    }

    let confidential = metadata.token_endpoint_auth_method != "none";
    let client_secret = confidential.then(Secret::generate);
    let registration_token = Secret::generate();
    let mut client = Client::new(secret::new_client_id(), "Unnamed client".into(), "dcr");
    client.token_endpoint_auth_method = metadata.token_endpoint_auth_method.clone();
    client.secret_hash = client_secret.as_ref().map(|s| s.digest().to_vec());
    client.registration_token_hash = Some(registration_token.digest().to_vec());
    let replaced = metadata.replaced.clone();
    apply(&mut client, metadata);
    client.created_at = chrono::Utc::now();
    clients::insert(&state.pool, &client).await?;
    let res = no_store((
        StatusCode::CREATED,
        Json(information(state, &client, client_secret.as_ref(), registration_token.expose())),
    ));
    Ok((res, client.client_id, replaced))
}

/// The self-registered client whose registration access token the request presents. Any
/// failure is the same 401, so the answer does not reveal whether the client exists.
async fn authorized_client(
    state: &AppState,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<(Client, String), ApiError> {
    let token = Bearer::from_headers(headers)
        .token()
        .ok_or_else(|| invalid_token("the registration access token is missing"))?;
    let client = crate::store::clients::get(&state.pool, client_id).await?;
    let presented = secret::digest(token);
    let valid = client
        .as_ref()
        .and_then(|c| c.registration_token_hash.as_deref())
        .is_some_and(|stored| bool::from(presented.ct_eq(stored)));
    match client {
        Some(client) if valid => Ok((client, token.to_owned())),
        _ => Err(invalid_token("the registration access token is invalid")),
    }
}

pub async fn read(State(state): State<AppState>, Path(client_id): Path<String>, headers: HeaderMap) -> Response {
    match authorized_client(&state, &client_id, &headers).await {
        // The client presented its token, so echoing it back (RFC 7592 §3) reveals nothing.
        Ok((client, token)) => no_store((StatusCode::OK, Json(information(&state, &client, None, &token)))),
        Err(e) => e.into_response(),
    }
}

pub async fn update(
    State(state): State<AppState>,
    meta: RequestMeta,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let (mut client, token) = authorized_client(&state, &client_id, &headers).await?;
        let body = read_body(body, MAX_BODY).await?;
        let doc = parse_json(&headers, &body)?;
        // RFC 7592 §2.2: the request carries the client_id, and a client_secret only if it matches.
        if doc.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
            return Err(OAuthError::invalid_request("client_id in the body must equal the client being updated").into());
        }
        if let Some(presented) = doc.get("client_secret") {
            let matches =
                presented.as_str().zip(client.secret_hash.as_deref()).is_some_and(|(s, h)| secret::verify(s, h));
            if !matches {
                return Err(OAuthError::invalid_request("client_secret does not match").into());
            }
        }
        let metadata = registration::parse(&doc, Source::Registration)?;
        if metadata.token_endpoint_auth_method != client.token_endpoint_auth_method {
            return Err(OAuthError::new(
                ErrorCode::InvalidClientMetadata,
                "token_endpoint_auth_method cannot be changed",
            )
            .into());
        }
        apply(&mut client, metadata);
        clients::update_metadata(&state.pool, &client).await?;
        // Forget the old metadata here at once; other instances follow the notification.
        state.clients.invalidate(&client.client_id);
        state
            .audit
            .record(Event::new("client.updated", Outcome::Success).during(&meta).client(&client.client_id))
            .await;
        Ok::<_, ApiError>(no_store((StatusCode::OK, Json(information(&state, &client, None, &token)))))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn delete(
    State(state): State<AppState>,
    meta: RequestMeta,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let (client, _) = authorized_client(&state, &client_id, &headers).await?;
        state.clients.delete(&state.revocation, &client.client_id).await?;
        state
            .audit
            .record(Event::new("client.deleted", Outcome::Success).during(&meta).client(&client.client_id))
            .await;
        Ok::<_, ApiError>(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}
