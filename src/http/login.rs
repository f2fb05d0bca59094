//! `GET/POST /login` and `POST /logout`. One message for an unknown user and a wrong password,
//! and the same cost: an unknown user is checked against a dummy argon2 hash.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use super::authorize::{expired_request, proceed};
use super::browser::{self, SessionUser};
use super::pages::{InfoPage, LoginPage, PageError, render};
use crate::audit::{Event, Outcome};
use crate::clients;
use crate::oauth::params::Params;
use crate::oauth::secret;
use crate::security::client_addr::RequestMeta;
use crate::state::AppState;
use crate::store::{authz_requests, login_throttle, users};

const BAD_CREDENTIALS: &str = "Incorrect username or password.";

/// A request handle as it appears in a URL: 43 base64url characters.
pub fn valid_handle(handle: &str) -> bool {
    handle.len() == 43 && handle.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The client name of a pending request, for "to continue to ...".
async fn pending_client_name(state: &AppState, handle: &str) -> Result<Option<String>, PageError> {
    let base = state.settings.issuer.path();
    if !valid_handle(handle) {
        return Err(expired_request(base));
    }
    let request = authz_requests::get(&state.pool, &secret::digest(handle))
        .await
        .map_err(|e| PageError::internal(base, e))?
        .ok_or_else(|| expired_request(base))?;
    let client = clients::find(state, &request.client_id).await.map_err(|e| PageError::client_lookup(base, e))?;
    Ok(client.map(|c| c.client_name.clone()))
}

struct LoginForm<'a> {
    request: Option<&'a str>,
    client_name: Option<String>,
    username: &'a str,
    error: Option<&'a str>,
}

async fn login_page(state: &AppState, session: &Session, status: StatusCode, form: LoginForm<'_>) -> Response {
    let base = state.settings.issuer.path();
    let csrf = match browser::csrf_token(session).await {
        Ok(t) => t,
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    render(
        status,
        &LoginPage {
            base,
            csrf_token: &csrf,
            request: form.request,
            client_name: form.client_name.as_deref(),
            username: form.username,
            error: form.error,
        },
    )
}

pub async fn show(State(state): State<AppState>, session: Session, RawQuery(query): RawQuery) -> Response {
    let base = state.settings.issuer.path();
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return PageError::bad_request(base, format!("Malformed request: {e}.")).into_response(),
    };
    let request = params.get("request");
    let client_name = match request {
        Some(handle) => match pending_client_name(&state, handle).await {
            Ok(name) => name,
            Err(page) => return page.into_response(),
        },
        None => None,
    };
    login_page(&state, &session, StatusCode::OK, LoginForm { request, client_name, username: "", error: None }).await
}

pub async fn submit(
    State(state): State<AppState>,
    meta: RequestMeta,
    session: Session,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = state.settings.issuer.path();
    let params = match browser::posted_form(&state.settings.issuer, &headers, &body) {
        Ok(p) => p,
        Err(page) => return page.into_response(),
    };
    let request = params.get("request");
    if request.is_some_and(|h| !valid_handle(h)) {
        return expired_request(base).into_response();
    }
    let username = params.get("username").unwrap_or("").trim();
    let password = params.get("password").unwrap_or("");
    let again = |error| LoginForm { request, client_name: None, username, error: Some(error) };
    if !browser::csrf_ok(&session, params.get("csrf_token")).await {
        let form = again("This form expired. Please sign in again.");
        return login_page(&state, &session, StatusCode::FORBIDDEN, form).await;
    }
    if username.is_empty()
        || username.len() > 64
        || password.is_empty()
        || password.len() > crate::password::MAX_LEN * 4
    {
        let form = again("Enter your username and password.");
        return login_page(&state, &session, StatusCode::BAD_REQUEST, form).await;
    }

    // Throttling is keyed on the name as typed and the source together: the same for unknown and
    // known accounts, and a failure flood elsewhere cannot lock the person out from here. The
    // attempt is reserved before the password is checked, so parallel guesses cannot all run.
    let account = username.to_lowercase();
    let source = meta.source.to_string();
    let settings = &state.settings;
    let limits = login_throttle::Limits {
        per_account: settings.login_max_failures,
        per_source: settings.login_source_max_failures,
    };
    match login_throttle::reserve(&state.pool, &account, &source, limits).await {
        Ok(None) => {}
        Ok(Some(until)) => {
            let secs = (until - chrono::Utc::now()).num_seconds().max(1);
            let event = Event::new("login.throttled", Outcome::RateLimited).during(&meta).digest_of(&account);
            state.audit.record(event).await;
            let message = format!("Too many failed sign-in attempts. Try again in {secs} seconds.");
            let mut res = login_page(&state, &session, StatusCode::TOO_MANY_REQUESTS, again(&message)).await;
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            return res;
        }
        Err(e) => return PageError::internal(base, e).into_response(),
    }

    let user = match users::by_username(&state.pool, username).await {
        Ok(u) => u,
        Err(e) => return PageError::internal(base, e).into_response(),
    };
    // Disabled and unknown accounts are verified against the dummy hash: same answer, same time.
    let hash = user.as_ref().filter(|u| !u.disabled).map(|u| u.password_hash.clone());
    let verified = crate::password::verify(password.to_owned(), hash).await;
    let known = user.as_ref().map(|u| (u.id, u.disabled));
    let Some(user) = user.filter(|_| verified) else {
        // The reservation stays: it is this failure's count.
        let mut event = Event::new("login.failure", Outcome::Denied).during(&meta).digest_of(&account);
        event = match known {
            Some((id, disabled)) => {
                event.subject(id.to_string()).detail(if disabled { "account disabled" } else { "wrong password" })
            }
            None => event.detail("unknown account"),
        };
        state.audit.record(event).await;
        let form = again(BAD_CREDENTIALS);
        return login_page(&state, &session, StatusCode::UNAUTHORIZED, form).await;
    };
    if let Err(e) = login_throttle::release(&state.pool, &account, &source).await {
        return PageError::internal(base, e).into_response();
    }
    let now = chrono::Utc::now();
    let session_user = SessionUser {
        id: user.id,
        username: user.username.clone(),
        auth_time: now.timestamp(),
        generation: user.session_generation,
    };
    if let Err(e) = browser::log_in(&session, session_user.clone()).await {
        return PageError::internal(base, e).into_response();
    }
    state.audit.record(Event::new("login.success", Outcome::Success).during(&meta).subject(user.id.to_string())).await;

    let Some(handle) = request else {
        return render(
            StatusCode::OK,
            &InfoPage { base, title: "Signed in", message: &format!("You are signed in as {}.", user.username) },
        );
    };
    let digest = secret::digest(handle);
    if !browser::owns_request(&session, &hex::encode(digest)).await {
        return expired_request(base).into_response();
    }
    match authz_requests::bind_user(&state.pool, &digest, user.id, Some(now)).await {
        Ok(true) => {}
        Ok(false) => return expired_request(base).into_response(),
        Err(e) => return PageError::internal(base, e).into_response(),
    }
    match authz_requests::get(&state.pool, &digest).await {
        Ok(Some(pending)) => proceed(&state, &meta, handle, pending, &session_user).await,
        Ok(None) => expired_request(base).into_response(),
        Err(e) => PageError::internal(base, e).into_response(),
    }
}

pub async fn logout(State(state): State<AppState>, session: Session, headers: HeaderMap, body: Bytes) -> Response {
    let base = state.settings.issuer.path();
    let params = match browser::posted_form(&state.settings.issuer, &headers, &body) {
        Ok(p) => p,
        Err(page) => return page.into_response(),
    };
    if !browser::csrf_ok(&session, params.get("csrf_token")).await {
        return PageError::forbidden(base, "This form expired.").into_response();
    }
    if let Err(e) = browser::log_out(&session).await {
        return PageError::internal(base, e).into_response();
    }
    render(StatusCode::OK, &InfoPage { base, title: "Signed out", message: "You are signed out." })
}
