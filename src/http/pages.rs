//! Server-rendered pages (askama): login, consent, errors. Every value is HTML-escaped by the
//! templates; pages carry no script and no inline style.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub base: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "info.html")]
pub struct InfoPage<'a> {
    pub base: &'a str,
    pub title: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    pub request: Option<&'a str>,
    pub client_name: Option<&'a str>,
    pub username: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    pub request: &'a str,
    pub client_name: &'a str,
    pub unverified: bool,
    pub metadata_document_host: Option<String>,
    pub localhost_only: bool,
    pub username: &'a str,
    pub redirect_host: String,
    pub resource_name: &'a str,
    pub resource_uri: &'a str,
    pub scopes: Vec<(String, String)>,
}

/// Render a page with a status; pages are never cached.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut res = (status, Html(html)).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => crate::error::ApiError::internal(e).into_response(),
    }
}

/// An error shown as a page (browser endpoints never answer JSON).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    pub base: String,
}

impl PageError {
    pub fn new(base: &str, status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self { status, title, message: message.into(), base: base.to_owned() }
    }

    /// An invalid authorization request that cannot be redirected (unknown client, bad redirect URI).
    pub fn bad_request(base: &str, message: impl Into<String>) -> Self {
        Self::new(base, StatusCode::BAD_REQUEST, "Invalid request", message)
    }

    pub fn forbidden(base: &str, message: impl Into<String>) -> Self {
        Self::new(base, StatusCode::FORBIDDEN, "Request refused", message)
    }

    /// A client that could not be looked up: a metadata document problem is shown, a database
    /// problem is not.
    pub fn client_lookup(base: &str, e: crate::clients::LookupError) -> Self {
        match e {
            crate::clients::LookupError::Database(e) => Self::internal(base, e),
            crate::clients::LookupError::Document(e) => {
                Self::bad_request(base, format!("The application cannot be used: {e}."))
            }
        }
    }

    /// Log the cause; show a page that says nothing about internals.
    pub fn internal(base: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error on a page");
        Self::new(
            base,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The server could not complete the request. Please try again later.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        render(self.status, &ErrorPage { base: &self.base, title: self.title, message: &self.message })
    }
}
