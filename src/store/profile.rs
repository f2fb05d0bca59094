//! A user's profile as OpenID Connect tells it, read from `users` alone or joined to a grant.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What OpenID Connect may tell about a user (the claims of the profile and email scopes).
#[derive(Clone, Debug)]
pub struct Profile {
    pub id: Uuid,
    pub username: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub updated_at: DateTime<Utc>,
}

/// A profile from the columns of an outer join (all `None` when there was no user).
pub fn joined_profile(
    id: Option<Uuid>,
    username: Option<String>,
    name: Option<String>,
    email: Option<String>,
    email_verified: Option<bool>,
    updated_at: Option<DateTime<Utc>>,
) -> Option<Profile> {
    Some(Profile {
        id: id?,
        username: username?,
        name,
        email,
        email_verified: email_verified?,
        updated_at: updated_at?,
    })
}
