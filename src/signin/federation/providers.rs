//! Adding and removing upstream providers: the presets (Google, Microsoft Entra with a tenant,
//! GitHub or a GitHub Enterprise Server), the checks on what an operator types, and the client
//! secret sealed under the master key.

use sqlx::PgPool;

use crate::config::MasterKey;
use crate::store::upstreams::{self, Upstream};

/// Which kind of provider, with what it needs.
#[derive(Clone, Debug)]
pub enum Preset {
    /// Any OpenID Connect provider, by issuer (Keycloak, Authentik, Okta, Auth0, another Tessera...).
    Oidc {
        issuer: String,
    },
    Google,
    /// One Microsoft Entra tenant (its id or primary domain).
    Entra {
        tenant: String,
    },
    /// github.com, or a GitHub Enterprise Server at `web` (its REST API at `api`).
    GitHub {
        web: Option<String>,
        api: Option<String>,
    },
}

/// A provider as the operator describes it.
#[derive(Clone, Debug)]
pub struct NewUpstream {
    pub name: String,
    pub preset: Preset,
    pub client_id: String,
    pub client_secret: String,
    /// Empty: the preset's.
    pub scopes: Vec<String>,
    pub button: Option<String>,
    pub allowed_domains: Vec<String>,
    pub allowed_emails: Vec<String>,
    pub required_groups: Vec<String>,
    /// `jit` or `invite`.
    pub accounts: String,
    pub link_existing: bool,
    pub allow_private_network: bool,
}

/// What is wrong with a new provider, naming the option.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("NAME: an upstream provider {0} already exists")]
    Exists(String),
    #[error("the client secret could not be sealed")]
    Sealing,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(key: &'static str, message: impl Into<String>) -> AddError {
    AddError::Invalid(key, message.into())
}

/// Check what the operator typed, before anything needs the master key: the provider as it
/// would be stored, its secret not yet sealed.
pub fn check(new: &NewUpstream) -> Result<Upstream, AddError> {
    shape(new)
}

/// Check and store a provider; returns it as stored.
pub async fn add(pool: &PgPool, master: &MasterKey, new: NewUpstream) -> Result<Upstream, AddError> {
    let upstream = build(master, new)?;
    if !upstreams::insert(pool, &upstream).await? {
        return Err(AddError::Exists(upstream.name));
    }
    Ok(upstream)
}

/// The login page's buttons: (name, label), in the order the providers were added.
pub async fn buttons(pool: &PgPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    upstreams::buttons(pool).await
}

/// Remove a provider; the identities linked through it go too (their accounts stay). `false` if
/// there was none.
pub async fn remove(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    upstreams::delete(pool, name).await
}

/// Every provider.
pub async fn list(pool: &PgPool) -> Result<Vec<Upstream>, sqlx::Error> {
    upstreams::list(pool).await
}

fn build(master: &MasterKey, new: NewUpstream) -> Result<Upstream, AddError> {
    let mut upstream = shape(&new)?;
    upstream.client_secret_enc =
        crate::tokens::keys::encrypt(master, &format!("upstream:{}", new.name), new.client_secret.as_bytes())
            .map_err(|_| AddError::Sealing)?;
    Ok(upstream)
}

fn shape(new: &NewUpstream) -> Result<Upstream, AddError> {
    let name_ok = (1..=32).contains(&new.name.len())
        && new.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && new.name.as_bytes()[0].is_ascii_alphanumeric();
    if !name_ok {
        return Err(invalid("NAME", "must be 1 to 32 of a-z, 0-9, - and _, starting with a letter or digit"));
    }
    if new.client_id.is_empty() || new.client_id.len() > 512 || new.client_id.chars().any(char::is_control) {
        return Err(invalid("--client-id", "must be 1 to 512 printable characters"));
    }
    let (kind, issuer, api_url, scopes, button) = preset(new)?;
    if new.client_secret.is_empty() || new.client_secret.len() > 1024 {
        return Err(invalid("--client-secret-stdin", "must be 1 to 1024 characters"));
    }
    if !matches!(new.accounts.as_str(), "jit" | "invite") {
        return Err(invalid("--accounts", "must be jit or invite"));
    }
    let http_ok = new.allow_private_network;
    check_url("--issuer", &issuer, http_ok)?;
    if let Some(api) = &api_url {
        check_url("--github-api-url", api, http_ok)?;
    }
    let scopes = if new.scopes.is_empty() { scopes } else { new.scopes.clone() };
    if kind == "oidc" && !scopes.iter().any(|s| s == "openid") {
        return Err(invalid("--scope", "must include openid"));
    }
    if scopes.iter().any(|s| s.is_empty() || s.len() > 128 || s.contains(char::is_whitespace)) {
        return Err(invalid("--scope", "scopes are non-empty words of at most 128 characters"));
    }
    let button = new.button.clone().unwrap_or(button);
    if button.trim().is_empty() || button.len() > 100 {
        return Err(invalid("--button", "must be 1 to 100 characters"));
    }
    let lower =
        |v: &[String]| v.iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
    let allowed_domains = lower(&new.allowed_domains);
    if allowed_domains.iter().any(|d| d.contains('@') || !d.contains('.') || d.len() > 253) {
        return Err(invalid("--allow-domain", "takes a domain such as example.com"));
    }
    let allowed_emails = lower(&new.allowed_emails);
    if allowed_emails.iter().any(|e| !e.contains('@') || e.len() > 254) {
        return Err(invalid("--allow-email", "takes an email address"));
    }
    Ok(Upstream {
        name: new.name.clone(),
        kind: kind.into(),
        issuer,
        api_url,
        client_id: new.client_id.clone(),
        client_secret_enc: Vec::new(),
        scopes,
        button,
        allowed_domains,
        allowed_emails,
        required_groups: new.required_groups.iter().map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect(),
        accounts: new.accounts.clone(),
        link_existing: new.link_existing,
        allow_private_network: new.allow_private_network,
        created_at: chrono::Utc::now(),
    })
}

type Shape = (&'static str, String, Option<String>, Vec<String>, String);

/// kind, issuer, API URL, default scopes, default button label.
fn preset(new: &NewUpstream) -> Result<Shape, AddError> {
    let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    Ok(match &new.preset {
        Preset::Oidc { issuer } => {
            ("oidc", issuer.clone(), None, words("openid email profile"), format!("Sign in with {}", new.name))
        }
        Preset::Google => (
            "oidc",
            "https://accounts.google.com".into(),
            None,
            words("openid email profile"),
            "Sign in with Google".into(),
        ),
        Preset::Entra { tenant } => {
            // The multi-tenant endpoints issue tokens whose `iss` names each user's tenant, so
            // one issuer cannot be checked: a tenant must be named.
            let generic = ["common", "organizations", "consumers"];
            let tenant_ok = !tenant.is_empty()
                && tenant.len() <= 100
                && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && !generic.contains(&tenant.to_ascii_lowercase().as_str());
            if !tenant_ok {
                return Err(invalid(
                    "--tenant",
                    "must be a tenant id or domain (not common, organizations or consumers)",
                ));
            }
            let issuer = format!("https://login.microsoftonline.com/{tenant}/v2.0");
            ("oidc", issuer, None, words("openid email profile"), "Sign in with Microsoft".into())
        }
        Preset::GitHub { web, api } => {
            let web = web.clone().unwrap_or_else(|| "https://github.com".into()).trim_end_matches('/').to_owned();
            let parsed = url::Url::parse(&format!("{web}/")).map_err(|_| invalid("--github-url", "is not a URL"))?;
            let api = api.clone().unwrap_or_else(|| super::github::default_api(&parsed));
            let mut scopes = words("read:user user:email");
            if !new.required_groups.is_empty() {
                scopes.push("read:org".into());
            }
            ("github", web, Some(api), scopes, "Sign in with GitHub".into())
        }
    })
}

fn check_url(key: &'static str, raw: &str, http_ok: bool) -> Result<(), AddError> {
    let url = url::Url::parse(raw).map_err(|_| invalid(key, "is not a URL"))?;
    let scheme_ok = url.scheme() == "https" || (http_ok && url.scheme() == "http");
    if !scheme_ok || url.host().is_none() || url.query().is_some() || url.fragment().is_some() || raw.len() > 1024 {
        let http = if http_ok { "" } else { " (http only with --allow-private-network)" };
        return Err(invalid(key, format!("must be an https URL without query or fragment{http}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(preset: Preset) -> NewUpstream {
        NewUpstream {
            name: "corp".into(),
            preset,
            client_id: "id".into(),
            client_secret: "secret".into(),
            scopes: vec![],
            button: None,
            allowed_domains: vec![],
            allowed_emails: vec![],
            required_groups: vec![],
            accounts: "jit".into(),
            link_existing: false,
            allow_private_network: false,
        }
    }

    #[test]
    fn presets_and_checks() {
        let master = MasterKey::generate();
        let google = build(&master, new(Preset::Google)).unwrap();
        assert_eq!(google.issuer, "https://accounts.google.com");
        assert_ne!(google.client_secret_enc, b"secret", "sealed");
        let entra = build(&master, new(Preset::Entra { tenant: "contoso.onmicrosoft.com".into() })).unwrap();
        assert_eq!(entra.issuer, "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0");
        assert!(build(&master, new(Preset::Entra { tenant: "common".into() })).is_err());
        let gh = NewUpstream { required_groups: vec!["acme".into()], ..new(Preset::GitHub { web: None, api: None }) };
        let gh = build(&master, gh).unwrap();
        assert_eq!(gh.api_url.as_deref(), Some("https://api.github.com"));
        assert!(gh.scopes.contains(&"read:org".to_owned()));
        let http = new(Preset::Oidc { issuer: "http://10.0.0.5:8080/realms/x".into() });
        assert!(build(&master, http.clone()).is_err(), "http needs --allow-private-network");
        assert!(build(&master, NewUpstream { allow_private_network: true, ..http }).is_ok());
        for name in ["", "Corp", "-x", "a b", &"x".repeat(33)] {
            assert!(build(&master, NewUpstream { name: name.into(), ..new(Preset::Google) }).is_err(), "{name}");
        }
        let no_openid = NewUpstream { scopes: vec!["email".into()], ..new(Preset::Google) };
        assert!(build(&master, no_openid).is_err());
        let bad_domain = NewUpstream { allowed_domains: vec!["@example.com".into()], ..new(Preset::Google) };
        assert!(build(&master, bad_domain).is_err());
    }
}
