//! GitHub (github.com or an Enterprise Server) upstream: plain OAuth 2.0, no ID token. The
//! person is read from the REST API with the access token: `GET /user` (the numeric `id` is the
//! subject: logins can be renamed), `GET /user/emails` (the primary email, if verified), and
//! `GET /user/orgs` when organizations are required (the `read:org` scope shows private
//! memberships). Endpoints per docs.github.com: "Authorizing OAuth apps", "REST API endpoints
//! for users" and "for organizations".

use reqwest::header::{self, HeaderMap, HeaderValue};
use serde_json::Value;

use super::{Failure, Identity};
use crate::platform::fetch::{self, Reach};

/// The web flow's endpoints under GitHub's address.
pub fn authorize_url(web: &url::Url) -> Result<url::Url, Failure> {
    web.join("login/oauth/authorize").map_err(|_| Failure::Discovery("its address is not a base URL".into()))
}

pub fn token_url(web: &url::Url) -> Result<url::Url, Failure> {
    web.join("login/oauth/access_token").map_err(|_| Failure::Discovery("its address is not a base URL".into()))
}

/// The REST API base for a GitHub address: api.github.com for github.com, `/api/v3` on a server.
pub fn default_api(web: &url::Url) -> String {
    if web.host_str() == Some("github.com") {
        "https://api.github.com".into()
    } else {
        format!("{}/api/v3", web.as_str().trim_end_matches('/'))
    }
}

fn api_headers(token: &str) -> Result<HeaderMap, Failure> {
    let mut headers = HeaderMap::new();
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Failure::Token("a malformed access token".into()))?;
    headers.insert(header::AUTHORIZATION, bearer);
    headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
    Ok(headers)
}

async fn api_get(api: &str, path: &str, token: &str, reach: Reach) -> Result<Value, Failure> {
    let url = url::Url::parse(&format!("{}{path}", api.trim_end_matches('/')))
        .map_err(|_| Failure::Discovery("its API address is not a URL".into()))?;
    Ok(fetch::get_json(&url, reach, api_headers(token)?)
        .await
        .map_err(|e| Failure::Upstream(format!("GET {path}: {e}")))?
        .json)
}

/// The person behind `token`; organizations only when `orgs` (some are required).
pub async fn identity(api: &str, token: &str, orgs: bool, reach: Reach) -> Result<Identity, Failure> {
    let user = api_get(api, "/user", token, reach).await?;
    let subject = user["id"].as_u64().ok_or_else(|| Failure::Upstream("GET /user has no numeric id".into()))?;
    let emails = api_get(api, "/user/emails", token, reach).await?;
    let primary = emails.as_array().and_then(|list| list.iter().find(|e| e["primary"] == true));
    let email = primary.and_then(|e| e["email"].as_str()).filter(|e| e.len() <= 254 && e.contains('@'));
    let groups = if orgs {
        let list = api_get(api, "/user/orgs?per_page=100", token, reach).await?;
        list.as_array()
            .map(|a| a.iter().filter_map(|o| o["login"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    } else {
        vec![]
    };
    Ok(Identity {
        subject: subject.to_string(),
        email: email.map(str::to_owned),
        email_verified: primary.is_some_and(|e| e["verified"] == true),
        name: user["name"].as_str().filter(|n| n.len() <= 200).map(str::to_owned),
        preferred_username: user["login"].as_str().filter(|l| l.len() <= 64).map(str::to_owned),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let dotcom = url::Url::parse("https://github.com").unwrap();
        assert_eq!(authorize_url(&dotcom).unwrap().as_str(), "https://github.com/login/oauth/authorize");
        assert_eq!(token_url(&dotcom).unwrap().as_str(), "https://github.com/login/oauth/access_token");
        assert_eq!(default_api(&dotcom), "https://api.github.com");
        let server = url::Url::parse("https://git.example.com/").unwrap();
        assert_eq!(default_api(&server), "https://git.example.com/api/v3");
    }
}
