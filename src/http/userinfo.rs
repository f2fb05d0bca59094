//! `GET/POST /userinfo` (OpenID Connect Core §5.3): the bearer token (RFC 6750: the
//! `Authorization` header, or `access_token` in a POSTed form), then `openid::userinfo` decides;
//! refusals are RFC 6750 challenges.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::openid::{self, UserinfoError, UserinfoParts};
use crate::state::AppState;
use crate::web::error::ApiError;
use crate::web::headers::{Bearer, no_store};

const BEARER: &str = "Bearer";
const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;

pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(&state, bearer(&headers, None)).await
}

pub async fn post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match super::browser::form(headers.get(axum::http::header::CONTENT_TYPE), &body) {
        Ok(params) => params.get("access_token").map(str::to_owned),
        // No form: the token is in the header (or missing).
        Err(_) => None,
    };
    answer(&state, bearer(&headers, form)).await
}

/// The one token presented, or why there is none (RFC 6750 §2: one method only).
fn bearer(headers: &HeaderMap, form: Option<String>) -> Result<String, ApiError> {
    let from_header = match Bearer::from_headers(headers) {
        Bearer::Absent => None,
        Bearer::Token(token) => Some(token.to_owned()),
        Bearer::Malformed => {
            return Err(challenge(StatusCode::BAD_REQUEST, "invalid_request", "use the Bearer scheme", BEARER));
        }
    };
    match (from_header, form) {
        (Some(token), None) | (None, Some(token)) => Ok(token),
        (Some(_), Some(_)) => Err(challenge(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "present the access token once (header or form, not both)",
            BEARER,
        )),
        (None, None) => {
            Err(challenge(StatusCode::UNAUTHORIZED, "invalid_request", "an access token is required", BEARER))
        }
    }
}

async fn answer(state: &AppState, token: Result<String, ApiError>) -> Response {
    let token = match token {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    let resources = state.resources.load();
    let Some(audience) = resources.userinfo().map(|r| r.uri.as_str()) else {
        return ApiError::internal("the userinfo resource is missing").into_response();
    };
    let parts = UserinfoParts {
        pool: &state.pool,
        keys: &state.keys,
        issuer: &state.settings.issuer,
        verified: &state.verified,
        revocation: &state.revocation,
        audience,
    };
    match openid::userinfo(&parts, &token).await {
        Ok(info) => no_store(Json(info)),
        Err(UserinfoError::InvalidToken(why)) => {
            challenge(StatusCode::UNAUTHORIZED, "invalid_token", why, INVALID_TOKEN).into_response()
        }
        Err(e @ UserinfoError::InsufficientScope) => challenge(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            e.to_string(),
            r#"Bearer error="insufficient_scope", scope="openid""#,
        )
        .into_response(),
        Err(UserinfoError::Database(e)) => ApiError::from(e).into_response(),
    }
}

fn challenge(
    status: StatusCode,
    code: &'static str,
    description: impl Into<std::borrow::Cow<'static, str>>,
    www_authenticate: &'static str,
) -> ApiError {
    let mut e = ApiError::new(status, code, description);
    e.challenge = Some(www_authenticate);
    e
}
