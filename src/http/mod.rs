//! The HTTP surface: one file per endpoint family, and [`router`], the one place that stacks
//! every layer.

pub mod health;
pub mod metadata;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::security::{headers, request_id};
use crate::state::AppState;

/// Largest request body any endpoint accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// A request that takes longer than this is cut off with 408.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STYLESHEET: &str = include_str!("../../static/tessera.css");

/// CORS for public, credential-free documents: any origin may read them.
fn public_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::HeaderName::from_static("mcp-protocol-version")])
        .max_age(Duration::from_secs(86400))
}

/// Build the whole application. Endpoints live under the issuer's path (`https://h/tenant`
/// serves `/tenant/jwks.json`); discovery is also served at the RFC 8414 path-inserted location.
pub fn router(state: AppState) -> Router {
    let issuer = state.settings.issuer.clone();
    let path = issuer.path();

    let discovery = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::metadata),
        )
        .route("/jwks.json", get(metadata::jwks))
        .layer(public_cors());
    let endpoints = Router::new()
        .merge(discovery)
        .route("/static/tessera.css", get(stylesheet));

    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    app = if path.is_empty() {
        app.merge(endpoints)
    } else {
        app.nest(path, endpoints).route(
            &format!("/.well-known/oauth-authorization-server{path}"),
            get(metadata::metadata).layer(public_cors()),
        )
    };
    let mut app = app
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);

    // Layers run outside-in in the reverse order they are added here:
    //   request id + access log  — outermost, so every response (even a panic) is logged with its id;
    //   security headers         — on every response, including errors produced below;
    //   panic catcher            — a bug answers 500 `server_error`, never a dropped connection;
    //   body limit, timeout      — bound what a client can make us read and how long it can hold us.
    app = app
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked").into_response()
        }));
    for layer in headers::layers(issuer.is_https()) {
        app = app.layer(layer);
    }
    app.layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::not_found().into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::method_not_allowed().into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}
