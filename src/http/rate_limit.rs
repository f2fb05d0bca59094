//! The per-address rate limit as middleware: over it, an audited 429 with `Retry-After` (an
//! HTML page on the browser routes, RFC 6749-shaped JSON elsewhere).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};

use super::browser::retry_after;
use super::pages::PageError;
use crate::platform::audit::{Event, Outcome, RequestMeta};
use crate::platform::rate_limit::{Route, retry_after_secs};
use crate::state::AppState;
use crate::web::error::ApiError;

/// Middleware: refuse a request over its route's per-address limit.
pub async fn per_address(
    axum::extract::State((state, route)): axum::extract::State<(AppState, Route)>,
    meta: RequestMeta,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state.limits.check_address(route, meta.source) {
        Ok(()) => next.run(req).await,
        Err(wait) => refuse(&state, route, &meta, wait).await,
    }
}

/// The 429 answer for `route`, audited.
async fn refuse(state: &AppState, route: Route, meta: &RequestMeta, wait: Duration) -> Response {
    crate::platform::metrics::rate_limited(route.name());
    let event = Event::new("rate_limit.hit", Outcome::RateLimited).during(meta).detail(route.name());
    state.audit.record(event).await;
    if route != Route::Browser {
        return ApiError::too_many_requests(wait).into_response();
    }
    let secs = retry_after_secs(wait);
    let message = format!("Too many requests from your network. Try again in {secs} seconds.");
    retry_after(PageError::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests", message).into_response(), secs)
}
