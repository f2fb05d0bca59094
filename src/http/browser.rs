//! What the browser pages share: the cross-site checks on every form POST, form and query
//! parsing, the `303` that sends the browser on, and the sign-in journey's answers as redirects.
//! (The session itself is `signin::session`; the per-handler set-up is in `extract`.)

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::pages::PageError;
use crate::config::Issuer;
use crate::oauth::params::{ParamError, Params};
use crate::platform::audit::RequestMeta;
use crate::signin::journey::{Journey, Step};
use crate::signin::session::BrowserSession;
use crate::state::AppState;

/// Fetch-metadata and Origin checks: a form POST must come from our own pages.
///
/// Browsers send `Sec-Fetch-Site` (which a page cannot forge) and decide on it alone: our pages
/// use `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` even on
/// same-origin POSTs. Without it (older browsers, scripts), a present `Origin` must be ours.
pub fn same_origin(headers: &HeaderMap, issuer: &Issuer) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => origin == issuer_origin(issuer),
    }
}

fn issuer_origin(issuer: &Issuer) -> &str {
    let s = issuer.as_str();
    let after = s.find("://").map_or(0, |i| i + 3);
    match s[after..].find('/') {
        Some(i) => &s[..after + i],
        None => s,
    }
}

/// The browser's `User-Agent`, if it is text.
pub fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
}

/// This browser's sign-in journey, for the request `meta`.
pub fn journey<'a>(
    state: &'a AppState,
    session: &'a BrowserSession,
    meta: &'a RequestMeta,
    headers: &'a HeaderMap,
) -> Journey<'a> {
    Journey {
        pool: &state.pool,
        session,
        mfa: state.settings.mfa,
        authorization: state.authorization(meta),
        user_agent: user_agent(headers),
    }
}

/// Send the browser where the journey's step says.
pub fn go(issuer: &Issuer, step: Step) -> Response {
    match step {
        Step::SecondFactor => see_other(&issuer.join("/login/second-factor")),
        Step::SetUpSecondFactor => see_other(&format!("{}?done=mfa-required", issuer.join("/account"))),
        Step::Account => see_other(&issuer.join("/account")),
        Step::Continue(location) => see_other(&location),
    }
}

/// `303 See Other`: the browser follows with a GET, also after a form POST.
pub fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut res = StatusCode::SEE_OTHER.into_response();
            res.headers_mut().insert(header::LOCATION, value);
            res
        }
        Err(_) => {
            crate::web::error::ApiError::internal("redirect location is not a valid header value").into_response()
        }
    }
}

/// `429` with `Retry-After`: a throttled answer, page or not.
pub fn retry_after(mut res: Response, secs: impl Into<HeaderValue>) -> Response {
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    res.headers_mut().insert(header::RETRY_AFTER, secs.into());
    res
}

#[derive(Debug)]
pub enum FormError {
    ContentType,
    Params(ParamError),
    Repeated(String),
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ContentType => f.write_str("the body must be application/x-www-form-urlencoded"),
            Self::Params(e) => e.fmt(f),
            Self::Repeated(name) => write!(f, "parameter {name} must not be repeated"),
        }
    }
}

/// The query of a page request; malformed is a page error.
pub fn query_params(query: Option<&str>) -> Result<Params, PageError> {
    Params::parse(query.unwrap_or("").as_bytes())
        .map_err(|e| PageError::bad_request(format!("Malformed request: {e}.")))
}

/// Parse an `application/x-www-form-urlencoded` body (its `Content-Type` given), refusing other
/// content types and repeated parameters.
pub fn form(content_type: Option<&HeaderValue>, body: &Bytes) -> Result<Params, FormError> {
    let content_type = content_type.and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(FormError::ContentType);
    }
    let params = Params::parse(body).map_err(FormError::Params)?;
    if let Some(name) = params.first_repeated() {
        return Err(FormError::Repeated(name.to_owned()));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks() {
        let issuer = Issuer::parse("https://auth.example.com/tenant").unwrap();
        assert_eq!(issuer_origin(&issuer), "https://auth.example.com");
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        h.insert(header::ORIGIN, "https://auth.example.com".parse().unwrap());
        assert!(same_origin(&h, &issuer));
        // Under no-referrer, browsers send Origin: null on same-origin form posts.
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert("sec-fetch-site", "same-site".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        // Without fetch metadata, Origin decides.
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h, &issuer));
        h.insert(header::ORIGIN, "https://auth.example.com".parse().unwrap());
        assert!(same_origin(&h, &issuer));
    }
}
