//! The authorization server's endpoints and pages: parse (the extractors of [`extract`] and
//! [`client_auth`]), call a wing, render JSON or a page. One file per endpoint family, none of
//! which calls another's functions; what they share is [`browser`], [`extract`], [`pages`],
//! [`client_auth`] and [`rate_limit`]. [`router`] is the one place that stacks every layer (the
//! plumbing itself is `web/`, shared with the gateway). It may import the wings, `web/` and
//! `state`; nothing below it imports it.

pub mod account;
pub mod authorize;
pub mod browser;
pub mod client_auth;
pub mod consent;
pub mod extract;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod metadata;
pub mod pages;
pub mod passkeys;
pub mod rate_limit;
pub mod register;
pub mod revoke;
pub mod second_factor;
pub mod token;
pub mod upstream_login;
pub mod userinfo;

use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::platform::rate_limit::Route;
use crate::state::AppState;
use crate::web::error::ApiError;
use crate::web::{cors, headers, health, request_id};

/// Largest request body any endpoint accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// A request that takes longer than this is cut off with 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STYLESHEET: &str = include_str!("../../static/tessera.css");
/// The one script: passkey ceremonies on the login, second-factor and account pages.
const WEBAUTHN_SCRIPT: &str = include_str!("../../static/webauthn.js");

/// The session cookie: `__Host-` prefixed (bound to this host, `Secure`, path `/`) when the
/// issuer is https at the root; plain on a loopback http issuer, where `Secure` cannot be set.
fn session_layer(state: &AppState) -> SessionManagerLayer<crate::store::sessions::PgSessionStore> {
    let issuer = &state.settings.issuer;
    let https = issuer.is_https();
    let path = if issuer.path().is_empty() { "/".to_owned() } else { issuer.path().to_owned() };
    let name = if https && path == "/" { "__Host-tessera_session" } else { "tessera_session" };
    let ttl = time::Duration::seconds(i64::try_from(state.settings.session_ttl.as_secs()).unwrap_or(43200));
    SessionManagerLayer::new(state.sessions.clone())
        .with_name(name)
        .with_secure(https)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_path(path)
        .with_expiry(Expiry::OnInactivity(ttl))
}

/// Build the whole application. Endpoints live under the issuer's path (`https://h/tenant`
/// serves `/tenant/jwks.json`); discovery is also served at the RFC 8414 path-inserted location.
pub fn router(state: AppState) -> Router {
    let issuer = state.settings.issuer.clone();
    let path = issuer.path();

    let cors = |policy: cors::Policy| axum::middleware::from_fn_with_state(policy, cors::layer);
    let discovery = Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata::metadata))
        .route("/.well-known/openid-configuration", get(metadata::metadata))
        .route("/jwks.json", get(metadata::jwks))
        .layer(cors(cors::DOCUMENTS));
    let limit = |route: Route| axum::middleware::from_fn_with_state((state.clone(), route), rate_limit::per_address);
    // Browser pages: sessions, no CORS.
    let pages = Router::new()
        .route("/authorize", get(authorize::authorize))
        .route("/login", get(login::show).post(login::submit))
        .route("/login/upstream/{name}", post(upstream_login::start))
        .route("/login/upstream/{name}/callback", get(upstream_login::callback))
        .route("/consent", get(consent::show).post(consent::submit))
        .route("/logout", get(logout::show).post(logout::submit))
        .route("/account", get(account::show))
        .route("/account/disconnect", post(account::disconnect))
        .route("/account/sessions/end", post(account::end_session))
        .route("/account/password", post(account::change_password))
        .route("/account/totp/setup", post(second_factor::setup))
        .route("/account/totp/confirm", post(second_factor::confirm))
        .route("/account/totp/disable", post(second_factor::disable))
        .route("/login/second-factor", get(second_factor::show).post(second_factor::submit))
        .route("/account/passkeys/options", post(passkeys::registration_options))
        .route("/account/passkeys/add", post(passkeys::add))
        .route("/account/passkeys/remove", post(passkeys::remove))
        .route("/login/passkey/options", post(passkeys::sign_in_options))
        .route("/login/passkey", post(passkeys::sign_in))
        .route("/login/second-factor/passkey/options", post(passkeys::second_factor_options))
        .route("/login/second-factor/passkey", post(passkeys::second_factor))
        // One limit for every page; `route_layer` so that an unknown path is still a 404.
        .route_layer(limit(Route::Browser))
        .layer(axum::middleware::from_fn_with_state(std::sync::Arc::<str>::from(path), pages::render_errors))
        .layer(session_layer(&state));
    let api = Router::new()
        .route("/token", post(token::token).route_layer(limit(Route::Token)))
        .route("/revoke", post(revoke::revoke).route_layer(limit(Route::Revoke)))
        .layer(cors(cors::API))
        .route("/introspect", post(introspect::introspect).route_layer(limit(Route::Introspect)));
    let userinfo = Router::new()
        .route("/userinfo", get(userinfo::get).post(userinfo::post).route_layer(limit(Route::Introspect)))
        .layer(cors(cors::USERINFO));
    let registration = Router::new()
        .route("/register", post(register::create))
        .route("/register/{client_id}", get(register::read).put(register::update).delete(register::delete))
        .layer(cors(cors::REGISTRATION));
    let endpoints = Router::new()
        .merge(discovery)
        .merge(pages)
        .merge(api)
        .merge(userinfo)
        .merge(registration)
        .route("/static/tessera.css", get(stylesheet))
        .route("/static/webauthn.js", get(webauthn_script));

    let mut app = Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    app = if path.is_empty() {
        app.merge(endpoints)
    } else {
        app.nest(path, endpoints)
            .route(
                &format!("/.well-known/oauth-authorization-server{path}"),
                get(metadata::metadata).layer(cors(cors::DOCUMENTS)),
            )
            .route(
                &format!("/.well-known/openid-configuration{path}"),
                get(metadata::metadata).layer(cors(cors::DOCUMENTS)),
            )
    };
    // (Not `method_not_allowed_fallback`: it would replace the per-route fallbacks that the CORS
    // layers wrap, and preflight requests would get 405.)
    let mut app = app.fallback(not_found);

    // Layers run outside-in in the reverse order they are added here:
    //   request id, client address (behind trusted proxies) and access log — outermost, so every
    //                              response (even a panic) is logged with its id;
    //   finish                   — framework-made 405/408/413 answers get an RFC 6749-shaped body,
    //                              and every response, errors included, the security headers;
    //   panic catcher            — a bug answers 500 `server_error`, never a dropped connection;
    //   body limit, timeout      — bound what a client can make us read and how long it can hold us.
    app = app
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
        .layer(axum::middleware::from_fn_with_state(issuer.is_https(), finish));
    let logging = request_id::Logging::new(&state.settings.trusted_proxies, false, state.settings.access_log_sample);
    app.layer(axum::middleware::from_fn_with_state(logging, request_id::layer)).with_state(state)
}

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

/// The last touches on every response: security headers, and the JSON error shape.
async fn finish(
    axum::extract::State(https): axum::extract::State<bool>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut res = json_errors(next.run(req).await);
    headers::apply(res.headers_mut(), https);
    res
}

/// Give bodiless or plain-text error answers made by the framework (wrong method, body too
/// large, timeout) the same JSON shape as ours, keeping their headers (such as `Allow`).
fn json_errors(res: Response) -> Response {
    let ours = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if ours {
        return res;
    }
    let replacement = match res.status() {
        axum::http::StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(),
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("the request body exceeds {MAX_BODY} bytes"),
        ),
        axum::http::StatusCode::REQUEST_TIMEOUT => {
            ApiError::new(axum::http::StatusCode::REQUEST_TIMEOUT, "invalid_request", "the request took too long")
        }
        _ => return res,
    };
    let (mut parts, _) = res.into_parts();
    let new = replacement.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in new.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, new.into_body())
}

async fn webauthn_script() -> Response {
    let headers =
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")];
    (headers, WEBAUTHN_SCRIPT).into_response()
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], STYLESHEET)
        .into_response()
}
