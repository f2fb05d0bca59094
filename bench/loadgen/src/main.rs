//! Tessera's benchmark load generator: runs each workload on every configured server (Tessera
//! first, then the reference), with the same duration and concurrency, and prints one table.
//! `bench/run` starts the servers, seeds them and writes the configuration this reads.
//!
//! Two subcommands serve `bench/gateway`: `mcp-echo`, the small MCP server the gateway protects,
//! and `gateway`, which measures a tool call directly and through the gateway. `login` serves
//! `bench/login`: password sign-ins through the pages against argon2id alone.

mod conn;
mod echo;
mod flow;
mod gateway;
mod login;
mod procstat;
mod workload;

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Parser;
use serde::Deserialize;
use url::Url;

use crate::conn::Req;
use crate::flow::{Code, OPENID_SCOPE, SCOPE};
use crate::workload::{Chains, Fixed, FromPool, Outcome, Pool, Source, basic, form};

#[derive(Parser)]
#[command(
    about = "Run the benchmark workloads against the servers in a configuration file",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// JSON file describing the servers (written by bench/run).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    /// Seconds each workload runs on each server.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Comma-separated subset of: discovery,jwks,client_credentials,introspection,refresh_token,authorization_code,
    /// authorization_code_id_token,revocation.
    #[arg(long, default_value = "all")]
    workloads: String,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Smoke mode: small pools, no warm-up (use with a short --duration).
    #[arg(long)]
    smoke: bool,
    /// Before each workload, wait up to this many seconds for the machine to be quiet (less
    /// than 0.15 cores busy with anything); 0 disables.
    #[arg(long, default_value_t = 20.0)]
    wait_quiet: f64,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the gateway benchmark's upstream: a minimal MCP server with one tool, `echo`.
    McpEcho(echo::EchoArgs),
    /// Measure a tool call directly and through `tessera gateway` (see bench/gateway).
    Gateway(gateway::GatewayArgs),
    /// Measure password sign-ins through the pages against argon2id alone, and token latency
    /// during a sign-in flood (see bench/login).
    Login(login::LoginArgs),
}

#[derive(Deserialize, Clone, Debug)]
pub struct ServerCfg {
    pub name: String,
    /// Base URL (the issuer), on a loopback address.
    pub base: String,
    /// Process id of the server, for resident memory and CPU time.
    pub pid: u32,
    pub discovery_path: String,
    /// The resource the JWT access tokens are bound to.
    pub resource: String,
    /// The resource whose tokens the introspection workload introspects.
    pub introspect_resource: String,
    pub cc_client_id: String,
    pub cc_client_secret: String,
    pub app_client_id: String,
    pub redirect_uri: String,
    pub username: String,
    pub password: String,
    /// Credentials to call introspection with, tried in order (then the confidential client).
    #[serde(default)]
    pub introspect_credentials: Vec<(String, String)>,
    /// A file with `KEY VALUE` lines (e.g. the output of `tessera resource add`) to scan for
    /// introspection credentials: every key naming an id, paired with every key naming a secret.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Also report the CPU time of the machine's PostgreSQL processes.
    #[serde(default)]
    pub uses_postgres: bool,
}

#[derive(Deserialize)]
struct Config {
    servers: Vec<ServerCfg>,
}

/// Where a server's endpoints are: from its discovery document, else the usual paths.
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub jwks: String,
    pub introspection: String,
    pub revocation: String,
}

pub struct Server {
    pub cfg: ServerCfg,
    pub addr: SocketAddr,
    pub host: String,
    pub endpoints: Endpoints,
}

impl Server {
    async fn discover(cfg: ServerCfg) -> Result<Self> {
        let base = Url::parse(&cfg.base)?;
        flow::check_loopback(&base)?;
        let host = format!("{}:{}", base.host_str().unwrap_or("127.0.0.1"), base.port_or_known_default().unwrap_or(80));
        let addr = host.to_socket_addrs()?.next().ok_or_else(|| anyhow!("cannot resolve {host}"))?;
        let http = flow::http_client(false)?;
        let doc: serde_json::Value =
            http.get(format!("{}{}", cfg.base, cfg.discovery_path)).send().await?.error_for_status()?.json().await?;
        let pick = |field: &str, default: &str| -> Result<String> {
            let url = doc[field].as_str().map_or_else(|| format!("{}{default}", cfg.base), str::to_owned);
            let parsed = Url::parse(&url)?;
            flow::check_loopback(&parsed)?;
            if parsed.origin() != base.origin() {
                bail!("{field} {url} is not on {}", cfg.base);
            }
            Ok(url)
        };
        let endpoints = Endpoints {
            authorization: pick("authorization_endpoint", "/authorize")?,
            token: pick("token_endpoint", "/token")?,
            jwks: pick("jwks_uri", "/jwks.json")?,
            introspection: pick("introspection_endpoint", "/introspect")?,
            revocation: pick("revocation_endpoint", "/revoke")?,
        };
        Ok(Self { cfg, addr, host, endpoints })
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }
}

/// The path (and query) of an absolute URL on the server, as sent on the wire.
fn path_of(url: &str) -> String {
    Url::parse(url).map(|u| u[url::Position::BeforePath..].to_owned()).unwrap_or_else(|_| url.to_owned())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Discovery,
    Jwks,
    ClientCredentials,
    Introspection,
    RefreshToken,
    AuthorizationCode,
    /// The same exchange for an OpenID Connect code (`openid`): it also signs an ID token.
    AuthorizationCodeIdToken,
    Revocation,
}

const ALL: [Workload; 8] = [
    Workload::Discovery,
    Workload::Jwks,
    Workload::ClientCredentials,
    Workload::Introspection,
    Workload::RefreshToken,
    Workload::AuthorizationCode,
    Workload::AuthorizationCodeIdToken,
    Workload::Revocation,
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Discovery => "discovery",
            Self::Jwks => "jwks",
            Self::ClientCredentials => "client_credentials",
            Self::Introspection => "introspection",
            Self::RefreshToken => "refresh_token",
            Self::AuthorizationCode => "authorization_code",
            Self::AuthorizationCodeIdToken => "authorization_code_id_token",
            Self::Revocation => "revocation",
        }
    }

    fn on_token_endpoint(self) -> bool {
        matches!(
            self,
            Self::ClientCredentials | Self::RefreshToken | Self::AuthorizationCode | Self::AuthorizationCodeIdToken
        )
    }
}

/// What preparing a workload on one server gave.
enum Prepared {
    Run { sources: Vec<Box<dyn Source>>, warmup: bool, max_duration: Option<Duration>, note: Option<String> },
    Skip(String),
}

struct Row {
    workload: Workload,
    server: String,
    result: Result<Measured, String>,
}

struct Measured {
    out: Outcome,
    peak_rss_kb: u64,
    cpu_server: f64,
    cpu_pg: Option<f64>,
    cpu_gen: f64,
    /// Cores busy with anything else on the machine (other builds and tests add noise).
    cpu_other: f64,
    note: Option<String>,
}

struct Bench {
    duration: Duration,
    concurrency: usize,
    smoke: bool,
    wait_quiet: Duration,
}

/// Wait (at most `max`) until the whole machine is nearly idle, so that other builds and tests
/// on a shared machine do not land in a measurement. Returns the busy cores last seen.
async fn wait_quiet(max: Duration) -> f64 {
    const QUIET: f64 = 0.15;
    let until = Instant::now() + max;
    let mut told = false;
    loop {
        let before = procstat::machine_busy_secs();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let busy = procstat::machine_busy_secs() - before;
        if busy < QUIET || Instant::now() >= until {
            if told {
                eprintln!(
                    "[bench]   machine {} ({busy:.2} cores busy)",
                    if busy < QUIET { "quiet" } else { "still busy; going on" }
                );
            }
            return busy;
        }
        if !told {
            eprintln!("[bench]   waiting up to {} s for other load to stop ({busy:.2} cores busy)", max.as_secs());
            told = true;
        }
    }
}

impl Bench {
    async fn prepare(&self, w: Workload, s: &Arc<Server>) -> Result<Prepared> {
        let c = self.concurrency;
        let e = &s.endpoints;
        let fixed = |reqs: Vec<Req>, must_contain: &'static str| -> Vec<Box<dyn Source>> {
            (0..c).map(|k| Box::new(Fixed { reqs: reqs.clone(), i: k, must_contain }) as Box<dyn Source>).collect()
        };
        let run = |sources, warmup| Prepared::Run { sources, warmup, max_duration: None, note: None };
        Ok(match w {
            Workload::Discovery => run(fixed(vec![Req::get(&s.cfg.discovery_path)], "\"issuer\""), true),
            Workload::Jwks => run(fixed(vec![Req::get(&path_of(&e.jwks))], "\"keys\""), true),
            Workload::ClientCredentials => {
                let body =
                    form(&[("grant_type", "client_credentials"), ("resource", &s.cfg.resource), ("scope", SCOPE)]);
                let auth = basic(&s.cfg.cc_client_id, &s.cfg.cc_client_secret);
                run(fixed(vec![Req::post_form(&path_of(&e.token), body, Some(auth))], "\"access_token\""), true)
            }
            Workload::Introspection => {
                if let Some(skip) = self.probe_404(s, &e.introspection).await? {
                    return Ok(Prepared::Skip(skip));
                }
                let tokens = self.client_credentials_tokens(s, 64).await?;
                let (auth, extra, who) = self.introspection_auth(s, &tokens[0]).await?;
                let reqs: Vec<Req> = tokens
                    .iter()
                    .map(|t| {
                        let mut pairs = vec![("token", t.as_str()), ("token_type_hint", "access_token")];
                        pairs.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
                        Req::post_form(&path_of(&e.introspection), form(&pairs), auth.clone())
                    })
                    .collect();
                Prepared::Run {
                    sources: fixed(reqs, "\"active\":true"),
                    warmup: true,
                    max_duration: None,
                    note: Some(format!("{} tokens introspected round robin by {who}", tokens.len())),
                }
            }
            Workload::RefreshToken => {
                let per_worker = if self.smoke { 1 } else { 4 };
                let want = c * per_worker;
                let (_, mut tokens) =
                    flow::mint(s.clone(), 16.min(want), want, Duration::from_secs(120), true, SCOPE).await?;
                if tokens.len() < want {
                    bail!("minted only {} of {want} refresh-token chains", tokens.len());
                }
                let sources = (0..c)
                    .map(|_| {
                        let chains = tokens.split_off(tokens.len() - per_worker);
                        Box::new(Chains {
                            token_path: path_of(&e.token),
                            client_id: s.cfg.app_client_id.clone(),
                            chains,
                            i: 0,
                        }) as Box<dyn Source>
                    })
                    .collect();
                Prepared::Run {
                    sources,
                    warmup: true,
                    max_duration: None,
                    note: Some(format!("{want} chains, {per_worker} per connection")),
                }
            }
            Workload::AuthorizationCode | Workload::AuthorizationCodeIdToken => {
                let (scope, must_contain) = match w {
                    Workload::AuthorizationCode => (SCOPE, "\"access_token\""),
                    _ if s.name() != "tessera" => {
                        // The reference is configured as an MCP authorization server with one
                        // ES256 key and no OpenID claims; this workload compares Tessera with itself.
                        return Ok(Prepared::Skip(format!("skipped: {} is measured on tessera only", w.name())));
                    }
                    _ => (OPENID_SCOPE, "\"id_token\""),
                };
                // Codes live 60 s on both servers: mint for a bounded time right before the run,
                // and end the run before the oldest code could expire.
                let budget = self.mint_budget(2.5, 25.0);
                let started = Instant::now();
                let (codes, _) = flow::mint(s.clone(), 16, 500_000, budget, false, scope).await?;
                let minted_in = started.elapsed();
                let left = Duration::from_secs(55).saturating_sub(started.elapsed());
                if left < Duration::from_secs(1) {
                    bail!("minting took too long for codes to stay valid");
                }
                let note = format!("{} codes minted in {:.1} s", codes.len(), minted_in.as_secs_f64());
                let (token_path, client_id, redirect_uri) =
                    (path_of(&e.token), s.cfg.app_client_id.clone(), s.cfg.redirect_uri.clone());
                let pool = Pool::new(codes);
                let build: Arc<dyn Fn(&Code) -> Req + Send + Sync> = Arc::new(move |code: &Code| {
                    let body = form(&[
                        ("grant_type", "authorization_code"),
                        ("code", &code.code),
                        ("redirect_uri", &redirect_uri),
                        ("code_verifier", &code.verifier),
                        ("client_id", &client_id),
                    ]);
                    Req::post_form(&token_path, body, None)
                });
                let sources = (0..c)
                    .map(|_| {
                        Box::new(FromPool { pool: pool.clone(), build: build.clone(), must_contain }) as Box<dyn Source>
                    })
                    .collect();
                Prepared::Run { sources, warmup: false, max_duration: Some(left), note: Some(note) }
            }
            Workload::Revocation => {
                if let Some(skip) = self.probe_404(s, &e.revocation).await? {
                    return Ok(Prepared::Skip(skip));
                }
                let budget = self.mint_budget(2.0, 30.0);
                let started = Instant::now();
                let (_, tokens) = flow::mint(s.clone(), 16, 500_000, budget, true, SCOPE).await?;
                let note =
                    format!("{} refresh tokens minted in {:.1} s", tokens.len(), started.elapsed().as_secs_f64());
                let (path, client_id) = (path_of(&e.revocation), s.cfg.app_client_id.clone());
                let pool = Pool::new(tokens);
                let build: Arc<dyn Fn(&String) -> Req + Send + Sync> = Arc::new(move |t: &String| {
                    let body = form(&[("token", t), ("token_type_hint", "refresh_token"), ("client_id", &client_id)]);
                    Req::post_form(&path, body, None)
                });
                let sources = (0..c)
                    .map(|_| {
                        Box::new(FromPool { pool: pool.clone(), build: build.clone(), must_contain: "" })
                            as Box<dyn Source>
                    })
                    .collect();
                Prepared::Run { sources, warmup: false, max_duration: None, note: Some(note) }
            }
        })
    }

    /// How long to mint before a pool workload: `factor` × the duration, within [1 s, `cap`].
    fn mint_budget(&self, factor: f64, cap: f64) -> Duration {
        Duration::from_secs_f64((self.duration.as_secs_f64() * factor).clamp(1.0, cap))
    }

    /// `Some(note)` when the endpoint does not exist (yet) on this server.
    async fn probe_404(&self, s: &Server, url: &str) -> Result<Option<String>> {
        let res = flow::http_client(false)?
            .post(url)
            .form(&[("token", "bench-probe"), ("client_id", &s.cfg.app_client_id)])
            .send()
            .await
            .with_context(|| format!("probing {url}"))?;
        Ok((res.status() == reqwest::StatusCode::NOT_FOUND)
            .then(|| format!("skipped: POST {} answers 404 on {} (not implemented yet)", path_of(url), s.name())))
    }

    /// Access tokens from client_credentials for the introspection resource.
    async fn client_credentials_tokens(&self, s: &Server, n: usize) -> Result<Vec<String>> {
        let http = flow::http_client(false)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let res = http
                .post(&s.endpoints.token)
                .basic_auth(&s.cfg.cc_client_id, Some(&s.cfg.cc_client_secret))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("resource", &s.cfg.introspect_resource),
                    ("scope", SCOPE),
                ])
                .send()
                .await?;
            let status = res.status();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            let token = body["access_token"]
                .as_str()
                .ok_or_else(|| anyhow!("client_credentials for introspection answered {status}: {body}"))?;
            out.push(token.to_owned());
        }
        Ok(out)
    }

    /// Find credentials the introspection endpoint accepts: each candidate with Basic, then in
    /// the form; the first that gets `active: true` for `token` wins.
    async fn introspection_auth(
        &self,
        s: &Server,
        token: &str,
    ) -> Result<(Option<hyper::header::HeaderValue>, Vec<(&'static str, String)>, String)> {
        let mut candidates = s.cfg.introspect_credentials.clone();
        if let Some(file) = &s.cfg.credentials_file {
            candidates.extend(scan_credentials(&std::fs::read_to_string(file).unwrap_or_default()));
        }
        candidates.push((s.cfg.cc_client_id.clone(), s.cfg.cc_client_secret.clone()));
        candidates.dedup();
        let http = flow::http_client(false)?;
        let mut tried = Vec::new();
        for (id, secret) in candidates {
            for in_form in [false, true] {
                let mut req = http.post(&s.endpoints.introspection);
                let mut pairs = vec![("token", token.to_owned()), ("token_type_hint", "access_token".to_owned())];
                if in_form {
                    pairs.push(("client_id", id.clone()));
                    pairs.push(("client_secret", secret.clone()));
                } else {
                    req = req.basic_auth(&id, Some(&secret));
                }
                let res = req.form(&pairs).send().await?;
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                if status.is_success() && body.contains("\"active\":true") {
                    let who = format!(
                        "{} ({})",
                        if id == s.cfg.cc_client_id {
                            "the confidential client"
                        } else {
                            "resource-server credentials"
                        },
                        if in_form { "client_secret_post" } else { "client_secret_basic" }
                    );
                    let chosen = if in_form {
                        (None, vec![("client_id", id), ("client_secret", secret)], who)
                    } else {
                        (Some(basic(&id, &secret)), vec![], who)
                    };
                    return Ok(chosen);
                }
                tried.push(format!(
                    "{id} ({}): {status} {}",
                    if in_form { "form" } else { "basic" },
                    body.chars().take(160).collect::<String>()
                ));
            }
        }
        bail!("no credentials got active:true from {}:\n    {}", s.endpoints.introspection, tried.join("\n    "))
    }

    async fn measure(
        &self,
        w: Workload,
        s: &Arc<Server>,
        rss: &procstat::RssSampler,
    ) -> Result<Option<Measured>, String> {
        if !self.wait_quiet.is_zero() {
            wait_quiet(self.wait_quiet).await;
        }
        let prepared = self.prepare(w, s).await.map_err(|e| format!("{e:#}"))?;
        let (sources, warmup, max_duration, note) = match prepared {
            Prepared::Skip(note) => return Ok(Some(skipped(note))),
            Prepared::Run { sources, warmup, max_duration, note } => (sources, warmup, max_duration, note),
        };
        let mut sources = sources;
        let mut warm_errors = None;
        if warmup && !self.smoke {
            let warm = Duration::from_secs_f64((self.duration.as_secs_f64() / 5.0).clamp(0.5, 2.0));
            let (out, back) = workload::run(s.addr, &s.host, sources, warm).await.map_err(|e| format!("{e:#}"))?;
            sources = back;
            if out.total_errors() > 0 {
                warm_errors = Some(out);
            }
        }
        let duration = max_duration.map_or(self.duration, |m| m.min(self.duration));
        rss.take_peak();
        let (cpu0, pg0, gen0, all0) = (
            procstat::cpu_secs(s.cfg.pid).unwrap_or(0.0),
            procstat::cpu_secs_by_name("postgres"),
            procstat::self_cpu_secs(),
            procstat::machine_busy_secs(),
        );
        let (mut out, _) = workload::run(s.addr, &s.host, sources, duration).await.map_err(|e| format!("{e:#}"))?;
        // Errors during the warm-up count too (a refresh chain that failed there is gone).
        if let Some(warm) = warm_errors {
            for (kind, n) in warm.errors {
                *out.errors.entry(format!("warm-up: {kind}")).or_default() += n;
            }
            out.error_samples.extend(warm.error_samples.into_iter().map(|e| format!("warm-up: {e}")));
        }
        // CPU shares over a run too short to measure mean nothing.
        let secs = if out.elapsed.as_secs_f64() < 0.05 { f64::NAN } else { out.elapsed.as_secs_f64() };
        let cpu_server = ((procstat::cpu_secs(s.cfg.pid).unwrap_or(0.0) - cpu0) / secs).max(0.0);
        let pg = ((procstat::cpu_secs_by_name("postgres") - pg0) / secs).max(0.0);
        let cpu_gen = ((procstat::self_cpu_secs() - gen0) / secs).max(0.0);
        let all = (procstat::machine_busy_secs() - all0) / secs;
        let cpu_other = if all.is_nan() { f64::NAN } else { (all - cpu_server - pg - cpu_gen).max(0.0) };
        let cpu_pg = s.cfg.uses_postgres.then_some(pg);
        let (cpu_server, cpu_gen, cpu_pg) =
            if secs.is_nan() { (f64::NAN, f64::NAN, cpu_pg.map(|_| f64::NAN)) } else { (cpu_server, cpu_gen, cpu_pg) };
        let peak_rss_kb = rss.take_peak();
        let mut note = note;
        if out.exhausted {
            let ran = format!("supply ran out after {:.1} s", out.elapsed.as_secs_f64());
            note = Some(note.map_or(ran.clone(), |n| format!("{n}; {ran}")));
        }
        Ok(Some(Measured { out, peak_rss_kb, cpu_server, cpu_pg, cpu_gen, cpu_other, note }))
    }
}

fn skipped(note: String) -> Measured {
    Measured {
        out: Outcome {
            elapsed: Duration::ZERO,
            ok: 0,
            errors: Default::default(),
            error_samples: vec![],
            hist: hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()),
            exhausted: false,
        },
        peak_rss_kb: 0,
        cpu_server: f64::NAN,
        cpu_pg: None,
        cpu_gen: f64::NAN,
        cpu_other: f64::NAN,
        note: Some(note),
    }
}

fn is_skip(m: &Measured) -> bool {
    m.out.ok == 0 && m.out.elapsed.is_zero() && m.note.as_deref().is_some_and(|n| n.starts_with("skipped"))
}

/// `KEY VALUE` lines: pair every key that names an id with every key that names a secret.
fn scan_credentials(text: &str) -> Vec<(String, String)> {
    let kv: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?.trim_end_matches(':').to_ascii_lowercase();
            let v = it.next()?;
            it.next().is_none().then(|| (k, v.to_owned()))
        })
        .collect();
    let ids = kv.iter().filter(|(k, _)| k.ends_with("id") || k.contains("client") && !k.contains("secret"));
    let secrets: Vec<_> = kv.iter().filter(|(k, _)| k.contains("secret")).collect();
    let mut out = Vec::new();
    for (_, id) in ids {
        for (_, secret) in &secrets {
            out.push((id.clone(), secret.clone()));
        }
    }
    // Also the resource URI itself as the id, in case credentials are named by the resource.
    if let Some((_, uri)) = kv.iter().find(|(k, _)| k == "uri") {
        for (_, secret) in &secrets {
            out.push((uri.clone(), secret.clone()));
        }
    }
    out
}

fn selected(list: &str) -> Result<Vec<Workload>> {
    if list == "all" {
        return Ok(ALL.to_vec());
    }
    list.split(',')
        .map(|n| ALL.iter().copied().find(|w| w.name() == n.trim()).ok_or_else(|| anyhow!("unknown workload {n}")))
        .collect()
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::McpEcho(echo)) => return echo::main(echo),
        Some(Command::Gateway(gateway)) => return gateway::main(gateway),
        Some(Command::Login(login)) => return login::main(login),
        None => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let path = args.config.as_ref().ok_or_else(|| anyhow!("--config is required"))?;
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)?;
    if config.servers.is_empty() {
        bail!("no servers configured");
    }
    if !(0.2..=600.0).contains(&args.duration) || !(1..=1024).contains(&args.concurrency) {
        bail!("--duration must be 0.2..600 s and --concurrency 1..1024");
    }
    let workloads = selected(&args.workloads)?;
    let mut servers = Vec::new();
    for cfg in config.servers {
        let name = cfg.name.clone();
        servers.push(Arc::new(Server::discover(cfg).await.with_context(|| format!("discovering {name}"))?));
    }
    let bench = Bench {
        duration: Duration::from_secs_f64(args.duration),
        concurrency: args.concurrency,
        smoke: args.smoke,
        wait_quiet: Duration::from_secs_f64(args.wait_quiet.clamp(0.0, 120.0)),
    };
    let samplers: Vec<_> = servers.iter().map(|s| procstat::RssSampler::start(s.cfg.pid)).collect();

    let mut rows = Vec::new();
    for &w in &workloads {
        for (s, rss) in servers.iter().zip(&samplers) {
            eprintln!("[bench] {:<18} on {:<10} ...", w.name(), s.name());
            let result = bench.measure(w, s, rss).await.map(|m| m.unwrap_or_else(|| skipped("skipped".into())));
            match &result {
                Ok(m) if is_skip(m) => eprintln!("[bench]   {}", m.note.as_deref().unwrap_or("")),
                Ok(m) => eprintln!(
                    "[bench]   {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}{}",
                    m.out.rps(),
                    m.out.ms(0.5),
                    m.out.ms(0.99),
                    m.out.total_errors(),
                    m.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                ),
                Err(e) => eprintln!("[bench]   !!! FAILED: {e}"),
            }
            rows.push(Row { workload: w, server: s.name().to_owned(), result });
        }
    }
    let hwm: Vec<(String, Option<u64>)> =
        servers.iter().map(|s| (s.name().to_owned(), procstat::status_kb(s.cfg.pid, "VmHWM"))).collect();
    drop(samplers);

    let report = report(&rows, &hwm, &servers, &args);
    println!("{report}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = rows.iter().any(|r| match &r.result {
        Ok(m) => m.out.total_errors() > 0,
        Err(_) => true,
    });
    if failed {
        eprintln!("\n!!! The benchmark saw errors or failed to set up a workload (see above): exiting 1.");
        std::process::exit(1);
    }
    Ok(())
}

fn fmt_f(v: f64, digits: usize) -> String {
    if v.is_nan() { "-".into() } else { format!("{v:.digits$}") }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The table (Markdown, readable as plain text), then notes, errors and the memory line.
fn report(rows: &[Row], hwm: &[(String, Option<u64>)], servers: &[Arc<Server>], args: &Args) -> String {
    let reference = servers.get(1).map(|s| s.name().to_owned());
    let primary = servers[0].name().to_owned();
    let find = |w: Workload, name: &str| {
        rows.iter().find(|r| r.workload == w && r.server == name).and_then(|r| r.result.as_ref().ok())
    };
    let mut table: Vec<[String; 14]> = vec![
        [
            "workload",
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "ratio",
            "peak RSS MB",
            "CPU srv",
            "CPU pg",
            "CPU gen",
            "CPU other",
            "target",
        ]
        .map(str::to_owned),
    ];
    let mut notes = Vec::new();
    let mut errors = Vec::new();
    for r in rows {
        let mut line: [String; 14] = Default::default();
        line[0] = r.workload.name().into();
        line[1] = r.server.clone();
        match &r.result {
            Err(e) => {
                line[2] = "FAILED".into();
                errors.push(format!("{} on {}: setup failed: {e}", r.workload.name(), r.server));
            }
            Ok(m) if is_skip(m) => {
                line[2] = "skipped".into();
                notes.push(format!("{} on {}: {}", r.workload.name(), r.server, m.note.as_deref().unwrap_or("")));
            }
            Ok(m) => {
                let o = &m.out;
                line[2] = fmt_f(o.rps(), 0);
                line[3] = fmt_f(o.ms(0.5), 2);
                line[4] = fmt_f(o.ms(0.99), 2);
                line[5] = fmt_f(o.max_ms(), 1);
                line[6] = if o.total_errors() > 0 { format!("**{}**", o.total_errors()) } else { "0".into() };
                line[8] = fmt_f(mb(m.peak_rss_kb), 1);
                line[9] = fmt_f(m.cpu_server, 2);
                line[10] = m.cpu_pg.map_or("-".into(), |v| fmt_f(v, 2));
                line[11] = fmt_f(m.cpu_gen, 2);
                line[12] = fmt_f(m.cpu_other, 2);
                if let Some(n) = &m.note {
                    notes.push(format!(
                        "{} on {}: {n}; {} requests in {:.1} s",
                        r.workload.name(),
                        r.server,
                        o.ok + o.total_errors(),
                        o.elapsed.as_secs_f64(),
                    ));
                }
                if o.total_errors() > 0 {
                    errors.push(format!(
                        "{} on {}: {} errors: {:?}\n      {}",
                        r.workload.name(),
                        r.server,
                        o.total_errors(),
                        o.errors,
                        o.error_samples.join("\n      ")
                    ));
                }
                if r.server == primary {
                    let other = reference.as_deref().and_then(|n| find(r.workload, n)).filter(|m| !is_skip(m));
                    let ratio = other.map(|ref_m| o.rps() / ref_m.out.rps().max(1e-9));
                    line[7] = ratio.map_or("-".into(), |x| format!("{x:.2}x"));
                    line[13] = targets(r.workload, o, ratio).join(", ");
                }
            }
        }
        table.push(line);
    }
    let widths: Vec<usize> = (0..14).map(|i| table.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Duration {} s per workload per server, concurrency {}, keep-alive HTTP/1.1 on loopback{}.\n",
        args.duration,
        args.concurrency,
        if args.smoke { " (smoke mode)" } else { "" }
    );
    for (k, l) in table.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if (2..=12).contains(&i) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
        if k == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let w = (*w).max(3);
                    if (2..=12).contains(&i) { format!("{}:", "-".repeat(w + 1)) } else { "-".repeat(w + 2) }
                })
                .collect();
            let _ = writeln!(s, "|{}|", rule.join("|"));
        }
    }
    let _ = writeln!(
        s,
        "\nratio: {primary} req/s ÷ {} req/s. CPU srv / pg / gen / other: cores used during the run by the server process / all PostgreSQL processes / the load generator / everything else on the machine (2 cores in all).",
        reference.as_deref().unwrap_or("reference")
    );
    for (name, kb) in hwm {
        let peak = rows
            .iter()
            .filter(|r| &r.server == name)
            .filter_map(|r| r.result.as_ref().ok().map(|m| m.peak_rss_kb))
            .max()
            .unwrap_or(0);
        let hwm_mb = kb.map(mb).unwrap_or(f64::NAN);
        let verdict = if name == &primary {
            let worst = mb(peak).max(if hwm_mb.is_nan() { 0.0 } else { hwm_mb });
            format!(" — target < 100 MB: {}", if worst < 100.0 { "PASS" } else { "FAIL" })
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "Peak resident memory of {name}: {:.1} MB sampled under load (VmRSS), {} MB VmHWM over its whole life{verdict}",
            mb(peak),
            fmt_f(hwm_mb, 1)
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nNotes:");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\n!!! ERRORS (every workload must have zero):");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}

/// The targets for Tessera's row: informative PASS/FAIL.
fn targets(w: Workload, o: &Outcome, ratio: Option<f64>) -> Vec<String> {
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let mut t = Vec::new();
    let mut vs_ref = |min: f64| match ratio {
        Some(r) => t.push(format!("≥{min}x ref {}", verdict(r >= min))),
        None => t.push(format!("≥{min}x ref n/a")),
    };
    match w {
        Workload::Discovery | Workload::Jwks => vs_ref(5.0),
        Workload::ClientCredentials | Workload::Introspection => vs_ref(2.0),
        Workload::RefreshToken => t.push(format!("≥3000/s {}", verdict(o.rps() >= 3000.0))),
        Workload::AuthorizationCode | Workload::AuthorizationCodeIdToken | Workload::Revocation => {}
    }
    if w.on_token_endpoint() {
        t.push(format!("p99<20ms {}", verdict(o.ms(0.99) < 20.0)));
    }
    t
}
