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
    /// Upstream identity providers: (name, button label).
    pub providers: Vec<(String, String)>,
    pub password_login: bool,
    /// "Sign in with a passkey" (the issuer can be a WebAuthn relying party).
    pub passkeys: bool,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    pub client_name: Option<&'a str>,
    pub username: &'a str,
    /// The request's parameters, sent again with the confirmation.
    pub carried: Vec<(&'a str, &'a str)>,
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
    pub scopes: Vec<crate::grant::authorization::ConsentScope>,
}

/// A connected application as the account page shows it.
pub struct AppRow {
    pub app: crate::signin::account::ConnectedApp,
    pub first_approved: String,
    pub last_used: String,
}

/// A session as the account page shows it.
pub struct SessionRow {
    pub session: crate::signin::account::DeviceSession,
    pub signed_in_at: String,
    pub expires_at: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    pub username: &'a str,
    pub name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub has_password: bool,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub apps: Vec<AppRow>,
    pub sessions: Vec<SessionRow>,
    /// With an authenticator app set up: the recovery codes left.
    pub second_factor: Option<i64>,
    /// Two-step sign-in is not turned off here (`TESSERA_MFA`).
    pub two_step_available: bool,
    /// Passkeys can be added (the issuer can be a WebAuthn relying party); the person's passkeys.
    pub passkeys_available: bool,
    pub passkeys: Vec<PasskeyRow>,
}

/// A passkey as the account page shows it.
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: String,
}

#[derive(Template)]
#[template(path = "second_factor.html")]
pub struct SecondFactorPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    pub error: Option<&'a str>,
    /// The person has an authenticator app (a code), a passkey, or both.
    pub totp: bool,
    pub passkey: bool,
}

#[derive(Template)]
#[template(path = "totp_setup.html")]
pub struct TotpSetupPage<'a> {
    pub base: &'a str,
    pub csrf_token: &'a str,
    /// The secret in base32, in groups of four.
    pub key: &'a str,
    pub uri: &'a str,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage<'a> {
    pub base: &'a str,
    pub codes: Vec<String>,
}

/// Let a page run the passkey script, and nothing else: the CSP names that one file (no inline
/// script, no nonce) and lets it talk to this origin only.
pub fn allow_passkey_script(mut res: Response, issuer: &crate::config::Issuer) -> Response {
    let csp =
        format!("{}; script-src {}; connect-src 'self'", crate::web::headers::CSP, issuer.join("/static/webauthn.js"));
    if let Ok(value) = HeaderValue::from_str(&csp) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, value);
    }
    res
}

/// Render a page with a status; pages are never cached.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => crate::web::headers::no_store((status, Html(html))),
        Err(e) => crate::web::error::ApiError::internal(e).into_response(),
    }
}

/// What the second-factor pages say when the sign-in waiting for it is gone.
pub const SIGN_IN_EXPIRED: &str = "This sign-in expired. Go back to the application and start again.";

/// An error shown as a page (browser endpoints never answer JSON). Handlers return it with `?`;
/// [`render_errors`] renders it, with the issuer path the page's links need.
#[derive(Clone, Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self { status, title, message: message.into() }
    }

    /// An invalid request that cannot be redirected (unknown client, bad redirect URI, bad form).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid request", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Request refused", message)
    }

    /// The pending authorization request is gone.
    pub fn expired_request() -> Self {
        Self::bad_request(
            "This sign-in request has expired or was already used. Go back to the application and start again.",
        )
    }

    /// The database (or another dependency) is unreachable: 503, and a page that says to try again.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency unavailable on a page");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The server cannot complete the request right now. Please try again in a moment.",
        )
    }

    /// Log the cause; show a page that says nothing about internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error on a page");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The server could not complete the request. Please try again later.",
        )
    }
}

impl From<sqlx::Error> for PageError {
    /// The database being unreachable is a 503 (try again), as on the JSON endpoints; a failing
    /// statement is a bug: 500.
    fn from(e: sqlx::Error) -> Self {
        if crate::web::error::is_unavailable(&e) { Self::unavailable(e) } else { Self::internal(e) }
    }
}

impl From<tower_sessions::session::Error> for PageError {
    /// Sessions live in the database (`store::sessions`): a store that cannot load or save one is
    /// the database being unavailable.
    fn from(e: tower_sessions::session::Error) -> Self {
        use tower_sessions::session::Error;
        use tower_sessions::session_store::Error as Store;
        match e {
            Error::Store(Store::Backend(_)) => Self::unavailable(e),
            e => Self::internal(e),
        }
    }
}

impl From<crate::signin::session::SignedInError> for PageError {
    fn from(e: crate::signin::session::SignedInError) -> Self {
        match e {
            crate::signin::session::SignedInError::Session(e) => e.into(),
            crate::signin::session::SignedInError::Database(e) => e.into(),
        }
    }
}

impl From<crate::signin::journey::JourneyError> for PageError {
    fn from(e: crate::signin::journey::JourneyError) -> Self {
        use crate::signin::journey::JourneyError;
        match e {
            JourneyError::Expired => Self::bad_request(SIGN_IN_EXPIRED),
            JourneyError::Authorization(e) => e.into(),
            JourneyError::Session(e) => e.into(),
            JourneyError::Database(e) => e.into(),
        }
    }
}

impl From<crate::clients::LookupError> for PageError {
    /// A metadata document problem is shown; a database problem is not.
    fn from(e: crate::clients::LookupError) -> Self {
        match e {
            crate::clients::LookupError::Database(e) => e.into(),
            crate::clients::LookupError::Document(e) => {
                Self::bad_request(format!("The application cannot be used: {e}."))
            }
        }
    }
}

impl From<crate::grant::authorization::AuthorizeError> for PageError {
    fn from(e: crate::grant::authorization::AuthorizeError) -> Self {
        use crate::grant::authorization::AuthorizeError;
        match e {
            AuthorizeError::Invalid(message) => Self::bad_request(message),
            AuthorizeError::Expired => Self::expired_request(),
            AuthorizeError::Client(e) => e.into(),
            AuthorizeError::Database(e) => e.into(),
        }
    }
}

impl From<crate::signin::federation::FederationError> for PageError {
    /// Each way an upstream sign-in ends short of a person gets a page that says which.
    fn from(e: crate::signin::federation::FederationError) -> Self {
        use crate::signin::federation::{Failure, FederationError as E};
        let message = format!("{}.", capitalized(&e.to_string()));
        match e {
            E::UnknownProvider(_) => Self::new(StatusCode::NOT_FOUND, "Unknown sign-in provider", message),
            E::NoPendingLogin | E::StateMismatch => Self::new(
                StatusCode::BAD_REQUEST,
                "Sign-in expired",
                format!("{message} Go back to the application and start again."),
            ),
            E::Denied(_) => Self::new(StatusCode::FORBIDDEN, "Sign-in cancelled", message),
            E::Refused(_) => Self::new(StatusCode::FORBIDDEN, "Sign-in not allowed", message),
            E::Failed(Failure::Unreachable(_)) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Identity provider unavailable",
                format!("{message} Please try again later."),
            ),
            E::Failed(_) => Self::new(StatusCode::BAD_GATEWAY, "Sign-in failed", message),
            E::Database(e) => e.into(),
            E::Sealed => Self::internal(e),
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// The response carries the error; [`render_errors`] turns it into the page.
impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

/// Middleware on the browser routes: render every [`PageError`] as the error page. The state is
/// the issuer's path, which the page's links start with.
pub async fn render_errors(
    axum::extract::State(base): axum::extract::State<std::sync::Arc<str>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    let Some(error) = res.extensions().get::<PageError>().cloned() else { return res };
    let (mut parts, _) = res.into_parts();
    let page = render(error.status, &ErrorPage { base: &base, title: error.title, message: &error.message });
    let (page_parts, body) = page.into_parts();
    parts.extensions.remove::<PageError>();
    for (name, value) in &page_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}
