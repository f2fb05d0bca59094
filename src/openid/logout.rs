//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): check the request (the
//! `id_token_hint`, the client, its registered `post_logout_redirect_uri`), decide whether the
//! person must confirm, and where the browser goes after the session ends. `http/logout.rs`
//! parses, ends the browser session and renders.
//!
//! A logout is a state change a third-party site could trigger with a link, so the session ends
//! without asking only when the request carries an ID token of the signed-in user (which only
//! an application that user signed in to holds), or when there is no session to end.

use std::sync::Arc;

use crate::clients::{Client, Clients, LookupError};
use crate::config::Issuer;
use crate::oauth::params::Params;
use crate::oauth::redirect_uri;
use crate::openid::{self, Hint};
use crate::platform::audit::{AuditSink, Event, Outcome, RequestMeta};
use crate::signin::authentication::SessionUser;
use crate::tokens::keys::KeyRing;

/// What a logout request asks, checked.
#[derive(Debug)]
pub struct Logout {
    /// The application that asks, when it said (by its ID token or `client_id`).
    pub client: Option<Arc<Client>>,
    /// Who its ID token names.
    pub hint: Option<Hint>,
    /// Where the browser goes afterwards: the registered `post_logout_redirect_uri`, with `state`.
    pub redirect: Option<String>,
}

/// Why a logout request cannot be honoured (shown to the person: never redirected).
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Client(#[from] LookupError),
}

/// Check a logout request's parameters (`id_token_hint`, `client_id`, `post_logout_redirect_uri`,
/// `state`; `logout_hint` and `ui_locales` are accepted and have no effect).
pub async fn check(clients: &Clients, keys: &KeyRing, issuer: &Issuer, params: &Params) -> Result<Logout, LogoutError> {
    let hint = match params.get("id_token_hint") {
        Some(token) => Some(openid::read_hint(keys, issuer, token).map_err(|_| {
            LogoutError::Invalid("The sign-out request carries an ID token this server did not issue.")
        })?),
        None => None,
    };
    let client_id = match (hint.as_ref().map(|h| h.aud.as_str()), params.get("client_id")) {
        (Some(aud), Some(named)) if aud != named => {
            return Err(LogoutError::Invalid("The sign-out request names two different applications."));
        }
        (Some(id), _) | (None, Some(id)) => Some(id),
        (None, None) => None,
    };
    let client = match client_id {
        Some(id) => Some(
            clients.find(id).await?.ok_or(LogoutError::Invalid("The application that sent you here is unknown."))?,
        ),
        None => None,
    };
    let redirect = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let Some(client) = &client else {
                return Err(LogoutError::Invalid(
                    "The sign-out request has a post_logout_redirect_uri but does not say which application sent it.",
                ));
            };
            if !openid::post_logout_redirect_uris(client).any(|registered| redirect_uri::matches(registered, uri)) {
                return Err(LogoutError::Invalid(
                    "The address to return to after signing out is not one this application registered.",
                ));
            }
            Some(match params.get("state") {
                Some(state) => crate::grant::authorization::with_query(uri, &[("state", state)]),
                None => uri.to_owned(),
            })
        }
    };
    Ok(Logout { client, hint, redirect })
}

/// Whether the person must confirm before the session ends: there is a session, and the request
/// carries no ID token of its user.
pub fn needs_confirmation(logout: &Logout, user: Option<&SessionUser>) -> bool {
    let Some(user) = user else { return false };
    logout.hint.as_ref().is_none_or(|hint| hint.sub != user.id.to_string())
}

/// Record that `user`'s browser session ended at `logout`'s request.
pub async fn record(audit: &AuditSink, meta: &RequestMeta, logout: &Logout, user: Option<&SessionUser>) {
    let mut event = Event::new("logout", Outcome::Success).during(meta);
    if let Some(user) = user {
        event = event.subject(user.id.to_string());
    }
    if let Some(client) = &logout.client {
        event = event.client(&client.client_id);
    }
    audit.record(event.detail(if user.is_some() { "session ended" } else { "no session" })).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: uuid::Uuid) -> SessionUser {
        SessionUser {
            id,
            username: "a".into(),
            auth_time: 0,
            generation: 0,
            sid: "s".into(),
            address: None,
            user_agent: None,
            setup_only: false,
        }
    }

    #[test]
    fn confirmation() {
        let alice = uuid::Uuid::new_v4();
        let hint = |sub: uuid::Uuid| Some(Hint { sub: sub.to_string(), aud: "c".into(), sid: None });
        let logout = |hint| Logout { client: None, hint, redirect: None };
        assert!(!needs_confirmation(&logout(None), None), "no session: nothing to confirm");
        assert!(needs_confirmation(&logout(None), Some(&user(alice))), "no ID token: ask");
        assert!(!needs_confirmation(&logout(hint(alice)), Some(&user(alice))), "her own ID token");
        assert!(needs_confirmation(&logout(hint(uuid::Uuid::new_v4())), Some(&user(alice))), "someone else's");
    }
}
