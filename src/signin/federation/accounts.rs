//! Who may in, and as whom: the provider's allowlists (pure), then the local account an upstream
//! identity signs in as. An identity is keyed on (provider, upstream subject), never on email;
//! a first login links to an existing account only through a verified email, and only when the
//! account is an invitation or the provider allows linking. Everything else is a [`Refusal`].

use sqlx::PgPool;
use uuid::Uuid;

use super::Identity;
use crate::store::upstreams::Upstream;
use crate::store::users::{self, NewProfile, User};
use crate::store::{self, federated_identities};

/// Why a person who signed in upstream may not in here. The message is shown to them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this sign-in needs an email address that the identity provider has verified")]
    EmailUnverified,
    #[error("your email address is not one that may sign in here")]
    EmailNotAllowed,
    #[error("you are not a member of a group or organization that may sign in here")]
    NotInGroup,
    #[error("there is no account for you here: ask an administrator to invite you")]
    NotInvited,
    #[error("an account with your email address already exists here: ask an administrator to link it")]
    AccountExists,
    #[error("several accounts here have your email address: ask an administrator")]
    AmbiguousEmail,
    #[error("your account here is disabled")]
    Disabled,
}

impl Refusal {
    /// The reason as the audit record names it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmailUnverified => "email_unverified",
            Self::EmailNotAllowed => "email_not_allowed",
            Self::NotInGroup => "not_in_group",
            Self::NotInvited => "not_invited",
            Self::AccountExists => "account_exists",
            Self::AmbiguousEmail => "ambiguous_email",
            Self::Disabled => "disabled",
        }
    }
}

/// The provider's allowlists, checked at every login (a person removed from a group is refused
/// the next time): emails and domains match a verified email only; groups need one in common.
pub fn admit(upstream: &Upstream, id: &Identity) -> Result<(), Refusal> {
    if !upstream.allowed_domains.is_empty() || !upstream.allowed_emails.is_empty() {
        let email = id.verified_email().ok_or(Refusal::EmailUnverified)?.to_ascii_lowercase();
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        let listed = upstream.allowed_emails.iter().any(|e| e.eq_ignore_ascii_case(&email))
            || upstream.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if !listed {
            return Err(Refusal::EmailNotAllowed);
        }
    }
    if !upstream.required_groups.is_empty()
        && !id.groups.iter().any(|g| upstream.required_groups.iter().any(|r| r.eq_ignore_ascii_case(g)))
    {
        return Err(Refusal::NotInGroup);
    }
    Ok(())
}

/// How the account was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Linked before.
    Linked,
    /// An invitation, claimed now.
    Invitation,
    /// An existing account, linked now by its verified email.
    LinkedByEmail,
    /// Created now (just in time).
    Created,
}

/// The local account `id` signs in as, linking or creating it as the provider allows.
pub async fn account_for(
    pool: &PgPool,
    upstream: &Upstream,
    id: &Identity,
) -> Result<Result<(User, Found), Refusal>, sqlx::Error> {
    // A concurrent first login of the same identity loses the link race; the second try finds it.
    for _ in 0..2 {
        if let Some(found) = try_account_for(pool, upstream, id).await? {
            return Ok(found);
        }
    }
    Err(sqlx::Error::RowNotFound)
}

async fn try_account_for(
    pool: &PgPool,
    upstream: &Upstream,
    id: &Identity,
) -> Result<Option<Result<(User, Found), Refusal>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let email = id.verified_email();
    if let Some(user_id) = federated_identities::touch(&mut tx, &upstream.name, &id.subject, email).await? {
        tx.commit().await?;
        let user = users::by_id(pool, user_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        return Ok(Some(if user.disabled { Err(Refusal::Disabled) } else { Ok((user, Found::Linked)) }));
    }
    // Any email, verified or not, that names an account here decides: an unverified one never
    // links, and must not create a second account that a later verified login would link to.
    let same_email = match id.email.as_deref() {
        Some(e) => users::by_email(&mut tx, e).await?,
        None => vec![],
    };
    let (user, found) = match same_email.as_slice() {
        [_, _, ..] => return Ok(Some(Err(Refusal::AmbiguousEmail))),
        [_] if email.is_none() => return Ok(Some(Err(Refusal::EmailUnverified))),
        [existing] if existing.disabled => return Ok(Some(Err(Refusal::Disabled))),
        [existing] if existing.invited => {
            users::claim_invitation(&mut tx, existing.id).await?;
            (existing.id, Found::Invitation)
        }
        [existing] if upstream.link_existing => (existing.id, Found::LinkedByEmail),
        [_] => return Ok(Some(Err(Refusal::AccountExists))),
        [] if upstream.accounts == "invite" => return Ok(Some(Err(Refusal::NotInvited))),
        [] => (create(&mut tx, id).await?, Found::Created),
    };
    if !federated_identities::link(&mut tx, &upstream.name, &id.subject, user, email).await? {
        return Ok(None);
    }
    tx.commit().await?;
    let user = store::users::by_id(pool, user).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok(Some(Ok((user, found))))
}

/// A new account for `id`: a username from the upstream's (free to choose, so suffixed when
/// taken), the profile, and the email only if verified.
async fn create(conn: &mut sqlx::PgConnection, id: &Identity) -> Result<Uuid, sqlx::Error> {
    let base = username_from(id);
    let profile =
        NewProfile { email: id.verified_email(), name: id.name.as_deref(), email_verified: id.email_verified };
    for attempt in 0..5 {
        let username =
            if attempt == 0 { base.clone() } else { format!("{base}-{}", &Uuid::new_v4().simple().to_string()[..6]) };
        let user = Uuid::new_v4();
        if users::insert_federated(conn, user, &username, &profile).await? {
            return Ok(user);
        }
    }
    Err(sqlx::Error::RowNotFound)
}

/// A username from the preferred username or the email's local part: letters, digits and
/// `. _ + -` only, at most 48 characters, never empty.
pub fn username_from(id: &Identity) -> String {
    let raw =
        id.preferred_username.as_deref().or(id.email.as_deref().and_then(|e| e.split('@').next())).unwrap_or("user");
    let cleaned: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-' | '@'))
        .take(48)
        .collect();
    if cleaned.is_empty() { "user".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream {
            name: "idp".into(),
            kind: "oidc".into(),
            issuer: "https://idp.example".into(),
            api_url: None,
            client_id: "c".into(),
            client_secret_enc: vec![],
            scopes: vec![],
            button: "b".into(),
            allowed_domains: vec![],
            allowed_emails: vec![],
            required_groups: vec![],
            accounts: "jit".into(),
            link_existing: false,
            allow_private_network: false,
            created_at: chrono::Utc::now(),
        }
    }

    fn person(email: &str, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            subject: "s1".into(),
            email: Some(email.into()),
            email_verified: verified,
            name: None,
            preferred_username: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn allowlists() {
        let open = upstream();
        assert_eq!(admit(&open, &person("a@x.example", false, &[])), Ok(()), "no lists: anyone");
        let domains = Upstream { allowed_domains: vec!["Example.COM".into()], ..upstream() };
        assert_eq!(admit(&domains, &person("ann@example.com", true, &[])), Ok(()));
        assert_eq!(admit(&domains, &person("ann@EXAMPLE.com", true, &[])), Ok(()));
        assert_eq!(admit(&domains, &person("ann@example.com", false, &[])), Err(Refusal::EmailUnverified));
        assert_eq!(admit(&domains, &person("ann@evil-example.com", true, &[])), Err(Refusal::EmailNotAllowed));
        assert_eq!(admit(&domains, &person("ann@sub.example.com", true, &[])), Err(Refusal::EmailNotAllowed));
        assert_eq!(admit(&domains, &person("example.com@evil.test", true, &[])), Err(Refusal::EmailNotAllowed));
        let emails = Upstream { allowed_emails: vec!["bob@other.test".into()], ..domains.clone() };
        assert_eq!(admit(&emails, &person("BOB@other.test", true, &[])), Ok(()));
        assert_eq!(admit(&emails, &person("ann@example.com", true, &[])), Ok(()), "either list");
        let groups = Upstream { required_groups: vec!["mcp-users".into(), "admins".into()], ..upstream() };
        assert_eq!(admit(&groups, &person("a@x", false, &["staff", "admins"])), Ok(()));
        assert_eq!(admit(&groups, &person("a@x", false, &["staff"])), Err(Refusal::NotInGroup));
        assert_eq!(admit(&groups, &person("a@x", false, &[])), Err(Refusal::NotInGroup));
    }

    #[test]
    fn usernames() {
        let mut id = person("Ann.Lee+mcp@example.com", true, &[]);
        assert_eq!(username_from(&id), "ann.lee+mcp");
        id.preferred_username = Some("ann lee <script>".into());
        assert_eq!(username_from(&id), "annleescript");
        id.preferred_username = Some("üï".into());
        assert_eq!(username_from(&id), "user");
        id.preferred_username = Some("x".repeat(100));
        assert_eq!(username_from(&id).len(), 48);
    }
}
