//! Minting authorization codes and refresh tokens through each server's real authorization
//! flow, as a browser (cookie jar, no automatic redirects) and a public client would. Not
//! measured: this prepares what the code-exchange, refresh and revocation workloads consume.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::Server;

pub const SCOPE: &str = "tools:read";
/// The same, as an OpenID Connect request: the code exchange also returns an ID token.
pub const OPENID_SCOPE: &str = "openid tools:read";

/// A code and the PKCE verifier that redeems it.
pub struct Code {
    pub code: String,
    pub verifier: String,
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn http_client(cookies: bool) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .cookie_store(cookies)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()?)
}

/// One browser: its own cookie jar, so one sign-in and one consent serve every later code.
pub struct Browser {
    http: reqwest::Client,
    server: Arc<Server>,
    scope: &'static str,
}

impl Browser {
    pub fn new(server: Arc<Server>, scope: &'static str) -> Result<Self> {
        Ok(Self { http: http_client(true)?, server, scope })
    }

    /// Run authorize → (login) → (consent: allow) → redirect to the client; return the code.
    pub async fn mint_code(&self) -> Result<Code> {
        let s = &self.server;
        let verifier = random_token();
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_token();
        let mut url = Url::parse(&s.endpoints.authorization)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &s.cfg.app_client_id)
            .append_pair("redirect_uri", &s.cfg.redirect_uri)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("resource", &s.cfg.resource)
            .append_pair("scope", self.scope);
        let mut res = self.http.get(url.clone()).send().await?;
        let mut page = url;
        for _ in 0..10 {
            let status = res.status();
            if status.is_redirection() {
                let location = res
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| anyhow!("{status} without Location at {page}"))?;
                let next = page.join(location)?;
                if next.as_str().starts_with(&s.cfg.redirect_uri) {
                    let q: std::collections::HashMap<_, _> = next.query_pairs().into_owned().collect();
                    if let Some(err) = q.get("error") {
                        bail!("authorization failed: {err}: {}", q.get("error_description").map_or("", |d| d));
                    }
                    if q.get("state") != Some(&state) {
                        bail!("state mismatch in {next}");
                    }
                    let code = q.get("code").ok_or_else(|| anyhow!("no code in {next}"))?.clone();
                    return Ok(Code { code, verifier });
                }
                check_loopback(&next)?;
                res = self.http.get(next.clone()).send().await?;
                page = next;
            } else if status == StatusCode::OK {
                let html = res.text().await?;
                let mut form = hidden_inputs(&html);
                if html.contains("name=\"password\"") {
                    form.push(("username".into(), s.cfg.username.clone()));
                    form.push(("password".into(), s.cfg.password.clone()));
                } else if html.contains("name=\"decision\"") {
                    form.push(("decision".into(), "allow".into()));
                } else {
                    bail!("unexpected page at {page}: {}", excerpt(&html));
                }
                let action = form_action(&html).ok_or_else(|| anyhow!("no form action at {page}"))?;
                let target = page.join(&action)?;
                check_loopback(&target)?;
                res = self
                    .http
                    .post(target.clone())
                    .header("origin", origin(&target))
                    .header("sec-fetch-site", "same-origin")
                    .form(&form)
                    .send()
                    .await?;
                page = target;
            } else {
                let body = res.text().await.unwrap_or_default();
                bail!("{status} at {page}: {}", excerpt(&body));
            }
        }
        bail!("authorization flow took too many steps")
    }
}

/// Exchange a code for tokens; return the refresh token.
pub async fn exchange_for_refresh(http: &reqwest::Client, s: &Server, code: &Code) -> Result<String> {
    let res = http
        .post(&s.endpoints.token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code.code),
            ("redirect_uri", &s.cfg.redirect_uri),
            ("code_verifier", &code.verifier),
            ("client_id", &s.cfg.app_client_id),
        ])
        .send()
        .await?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    if status != StatusCode::OK {
        bail!("code exchange answered {status}: {body}");
    }
    body["refresh_token"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no refresh_token in {body}"))
}

/// Mint codes for `scope` (and, with `exchange`, turn each into a refresh token) with `tasks`
/// concurrent requests until `count` are minted or `budget` has passed. Returns what was minted.
///
/// One browser signs in once (the first code) and then serves every task, like a browser with
/// many tabs: signing in is password hashing, which the workloads do not measure.
pub async fn mint(
    server: Arc<Server>,
    tasks: usize,
    count: usize,
    budget: Duration,
    exchange: bool,
    scope: &'static str,
) -> Result<(Vec<Code>, Vec<String>)> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    let deadline = Instant::now() + budget;
    let browser = Arc::new(Browser::new(server.clone(), scope)?);
    let http = http_client(false)?;
    let (mut codes, mut refresh) = (Vec::new(), Vec::new());
    let first = browser.mint_code().await.with_context(|| format!("signing in on {}", server.cfg.name))?;
    if exchange {
        refresh.push(exchange_for_refresh(&http, &server, &first).await?);
    } else {
        codes.push(first);
    }
    let left = Arc::new(AtomicUsize::new(count.saturating_sub(1)));
    let mut handles = Vec::new();
    for _ in 0..tasks.max(1) {
        let (server, browser, http, left) = (server.clone(), browser.clone(), http.clone(), left.clone());
        handles.push(tokio::spawn(async move {
            let (mut codes, mut refresh) = (Vec::new(), Vec::new());
            let mut failures = 0;
            // Claim one unit of the count before working on it.
            while Instant::now() < deadline && left.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
                let one = async {
                    let code = browser.mint_code().await?;
                    if exchange {
                        refresh.push(exchange_for_refresh(&http, &server, &code).await?);
                    } else {
                        codes.push(code);
                    }
                    anyhow::Ok(())
                };
                if let Err(e) = one.await {
                    failures += 1;
                    if failures >= 3 {
                        return Err(e.context(format!("minting on {}", server.cfg.name)));
                    }
                }
            }
            anyhow::Ok((codes, refresh))
        }));
    }
    for h in handles {
        let (c, r) = h.await.context("minting task")??;
        codes.extend(c);
        refresh.extend(r);
    }
    Ok((codes, refresh))
}

/// Every address this program talks to is on the loopback interface.
pub fn check_loopback(url: &Url) -> Result<()> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Ok(()),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Ok(()),
        Some(url::Host::Domain("localhost")) => Ok(()),
        _ => bail!("refusing a non-loopback address: {url}"),
    }
}

pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

pub fn excerpt(s: &str) -> String {
    s.chars().take(300).collect::<String>().replace('\n', " ")
}

/// The `action` of the first form in a page.
pub fn form_action(html: &str) -> Option<String> {
    let form = &html[html.find("<form")?..];
    let tag = &form[..form.find('>')?];
    attr(tag, "action").map(|a| unescape(&a))
}

/// The `(name, value)` pairs a browser would post from the page (hidden inputs and checked checkboxes).
pub fn hidden_inputs(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        rest = &rest[i..];
        let Some(end) = rest.find('>') else { break };
        let tag = &rest[..end];
        // Hidden fields, and checked enabled checkboxes (the consent page's scopes), as a
        // browser sends them.
        let kind = attr(tag, "type");
        let checked = kind.as_deref() == Some("checkbox") && tag.contains(" checked") && !tag.contains(" disabled");
        if kind.as_deref() == Some("hidden") || checked {
            if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                out.push((unescape(&n), unescape(&v)));
            }
        }
        rest = &rest[end..];
    }
    out
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let start = tag.find(&marker)? + marker.len();
    Some(tag[start..].split('"').next()?.to_owned())
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&amp;", "&")
}
