//! `tessera-loadgen login`: the login benchmark. In one process on one machine, for several
//! rounds: argon2id verifications per second in this process alone (the crate version and
//! parameters Tessera uses, as many threads as Tessera's pool), complete password sign-ins per
//! second through Tessera's pages, and `client_credentials` latency at a fixed rate, alone and
//! during a flood of sign-ins; then one table of the runs, their medians and the ratios.
//! `bench/login` starts Tessera, seeds it and writes the configuration this reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{COOKIE, HeaderMap, HeaderName, HeaderValue, LOCATION, ORIGIN, SET_COOKIE};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::conn::{Conn, Req};
use crate::flow::{self, SCOPE};
use crate::gateway::{median, table};
use crate::workload::{self, Fixed, Outcome, Source, basic, form, new_hist};
use crate::{Server, ServerCfg, fmt_f, path_of, procstat, wait_quiet};

#[derive(clap::Args)]
pub struct LoginArgs {
    /// JSON file describing Tessera, its clients and its user (written by bench/login).
    #[arg(long)]
    config: PathBuf,
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Rounds; each measures argon2 alone, sign-ins, tokens alone and tokens during a flood.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Connections signing in back to back (closed loop); each sign-in is a new browser.
    #[arg(long, default_value_t = 16)]
    login_concurrency: usize,
    /// client_credentials requests per second, sent on a fixed schedule (not a closed loop).
    #[arg(long, default_value_t = 1000.0)]
    token_rate: f64,
    /// Connections the token requests are spread over.
    #[arg(long, default_value_t = 8)]
    token_connections: usize,
    /// Threads verifying in the argon2-alone runs (default: the size of Tessera's pool, the
    /// machine's available parallelism and at least 2).
    #[arg(long)]
    argon2_threads: Option<usize>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Smoke mode: no warm-up (use with a short --duration and one round).
    #[arg(long)]
    smoke: bool,
    /// Before each run, wait up to this many seconds for the machine to be quiet; 0 disables.
    #[arg(long, default_value_t = 20.0)]
    wait_quiet: f64,
}

#[derive(Deserialize)]
struct Config {
    /// Tessera; its `username` and `password` are the first user's.
    server: ServerCfg,
    /// Every user the sign-ins use, as `[username, password]`: connection k signs in as user
    /// k mod n, so each account has about one sign-in in flight, as in a flood of people (the
    /// login throttle counts a sign-in in flight as a failure until it succeeds).
    #[serde(default)]
    users: Vec<(String, String)>,
    /// What was measured, for the table's heading.
    #[serde(default)]
    label: String,
}

/// No step of a sign-in, and no token request, may take longer than this; it counts as an error.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Cores busy with other work above which a run counts as disturbed (left out of the medians
/// when quiet runs exist).
const QUIET_OTHER: f64 = 0.2;
/// Hard cap on operations in one run, whatever the duration.
const MAX_OPS: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// argon2id verifications in this process, Tessera idle.
    Argon2,
    /// Password sign-ins through the pages, nothing else.
    Logins,
    /// client_credentials at a fixed rate, nothing else.
    Tokens,
    /// client_credentials at the same rate during a sign-in flood...
    TokensFlood,
    /// ...and the sign-ins of that flood.
    LoginsFlood,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Argon2 => "argon2id alone",
            Self::Logins => "sign-ins",
            Self::Tokens => "tokens alone",
            Self::TokensFlood => "tokens during flood",
            Self::LoginsFlood => "sign-ins during flood",
        }
    }
}

/// One measured run (the flood gives two: its tokens and its sign-ins, with the same CPU figures).
struct Run {
    round: usize,
    kind: Kind,
    out: Outcome,
    /// Sign-ins that ended on the consent page rather than at the client with a code.
    consent: u64,
    /// Cores used during the run by Tessera, all PostgreSQL processes, this process, the rest.
    cpu_tessera: f64,
    cpu_pg: f64,
    cpu_gen: f64,
    cpu_other: f64,
}

impl Run {
    /// Successful operations per second.
    fn ok_per_sec(&self) -> f64 {
        let secs = self.out.elapsed.as_secs_f64();
        if secs > 0.0 { self.out.ok as f64 / secs } else { f64::NAN }
    }

    /// Milliseconds of CPU per successful operation of a process that used `cores`.
    fn cpu_ms_per_op(&self, cores: f64) -> f64 {
        if self.out.ok == 0 { f64::NAN } else { cores * self.out.elapsed.as_secs_f64() * 1e3 / self.out.ok as f64 }
    }
}

/// What a sign-in needs to know about Tessera.
struct LoginTarget {
    base: Url,
    authorize: Url,
    client_id: String,
    redirect_uri: String,
    resource: String,
    users: Vec<(String, String)>,
}

pub fn main(args: LoginArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

/// The size of Tessera's argon2 pool (`src/signin/password.rs`): the machine's available parallelism,
/// at least 2.
fn tessera_pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

async fn run(args: LoginArgs) -> Result<()> {
    let cfg: Config = serde_json::from_str(
        &std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?,
    )?;
    if !(0.2..=600.0).contains(&args.duration)
        || !(1..=20).contains(&args.rounds)
        || !(1..=256).contains(&args.login_concurrency)
        || !(1.0..=50_000.0).contains(&args.token_rate)
        || !(1..=256).contains(&args.token_connections)
    {
        bail!(
            "--duration must be 0.2..600 s, --rounds 1..20, --login-concurrency 1..256, --token-rate 1..50000 \
             and --token-connections 1..256"
        );
    }
    let threads = args.argon2_threads.unwrap_or_else(tessera_pool_size);
    if !(1..=64).contains(&threads) {
        bail!("--argon2-threads must be 1..64");
    }
    let mut users = cfg.users.clone();
    if users.is_empty() {
        users.push((cfg.server.username.clone(), cfg.server.password.clone()));
    }
    let server = Arc::new(Server::discover(cfg.server.clone()).await.context("discovering Tessera")?);
    let target = Arc::new(LoginTarget {
        base: Url::parse(&server.cfg.base)?,
        authorize: Url::parse(&server.endpoints.authorization)?,
        client_id: server.cfg.app_client_id.clone(),
        redirect_uri: server.cfg.redirect_uri.clone(),
        resource: server.cfg.resource.clone(),
        users,
    });
    let token_req = {
        let body = form(&[("grant_type", "client_credentials"), ("resource", &server.cfg.resource), ("scope", SCOPE)]);
        Req::post_form(
            &path_of(&server.endpoints.token),
            body,
            Some(basic(&server.cfg.cc_client_id, &server.cfg.cc_client_secret)),
        )
    };
    let phc = check(&cfg.server, &target, &token_req).await?;

    let duration = Duration::from_secs_f64(args.duration);
    let warm = (!args.smoke).then(|| Duration::from_secs_f64((args.duration / 5.0).clamp(0.5, 2.0)));
    let quiet = Duration::from_secs_f64(args.wait_quiet.clamp(0.0, 120.0));
    let bench = Bench {
        server: server.clone(),
        target,
        token_req,
        phc: Arc::new(phc),
        threads,
        logins: args.login_concurrency,
        token_rate: args.token_rate,
        token_conns: args.token_connections,
        duration,
        warm,
        quiet,
    };
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        // Alternate the order within each pair, so that a drift of the machine over time does
        // not always favour the same side.
        let pairs: [[bool; 2]; 2] = if round % 2 == 1 { [[true, false]; 2] } else { [[false, true]; 2] };
        for first in pairs[0] {
            let kind = if first { Kind::Argon2 } else { Kind::Logins };
            eprintln!("[bench] round {round}/{}: {} ...", args.rounds, kind.label());
            let run = bench.measure(round, kind).await?;
            runs.extend(run);
        }
        for alone in pairs[1] {
            let kind = if alone { Kind::Tokens } else { Kind::TokensFlood };
            eprintln!("[bench] round {round}/{}: {} ...", args.rounds, kind.label());
            let run = bench.measure(round, kind).await?;
            runs.extend(run);
        }
    }
    let report = report(&runs, &args, &bench, &cfg.label);
    println!("{report}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    if runs.iter().any(|r| r.out.total_errors() > 0) {
        eprintln!("\n!!! The benchmark saw errors (see above): exiting 1.");
        std::process::exit(1);
    }
    Ok(())
}

/// Before measuring: each user's first sign-in, with consent (so that later sign-ins go
/// straight back to the client with a code, as Tessera remembers the consent), then one sign-in
/// of each as the runs do it, and one token request. Returns the PHC string the argon2-alone
/// runs verify against.
async fn check(cfg: &ServerCfg, target: &LoginTarget, token_req: &Req) -> Result<String> {
    let mut conn = None;
    for (k, (username, password)) in target.users.iter().enumerate() {
        let cfg = ServerCfg { username: username.clone(), password: password.clone(), ..cfg.clone() };
        let server = Arc::new(Server::discover(cfg).await?);
        flow::Browser::new(server.clone(), SCOPE)?
            .mint_code()
            .await
            .with_context(|| format!("the first sign-in (with consent) of {username}"))?;
        let conn = match &mut conn {
            Some(c) => c,
            None => conn.insert(Conn::connect(server.addr, &server.host).await?),
        };
        match sign_in(conn, target, k).await {
            Ok(SignedIn::Code) => {}
            Ok(SignedIn::Consent) => bail!("a sign-in after the consent was given still ends on the consent page"),
            Err(f) => bail!("a sign-in of {username} failed: {}: {}", f.kind, f.detail),
        }
    }
    let conn = conn.as_mut().ok_or_else(|| anyhow!("no users"))?;
    let (status, body) = tokio::time::timeout(STEP_TIMEOUT, conn.send(token_req))
        .await
        .map_err(|_| anyhow!("the token request timed out"))??;
    if status != StatusCode::OK || !String::from_utf8_lossy(&body).contains("\"access_token\"") {
        bail!("client_credentials answered {status}: {}", flow::excerpt(&String::from_utf8_lossy(&body)));
    }
    // The hash of the argon2-alone runs: made here with the same crate and its defaults, as
    // Tessera makes its users' hashes (`password::hash_blocking`), and checked to carry the
    // parameters Tessera's own test expects.
    let password = target.users[0].1.clone();
    let phc = tokio::task::spawn_blocking(move || {
        Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| anyhow!("{e}"))
    })
    .await??;
    if !phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") {
        bail!("argon2's defaults changed: {}", phc.split('$').take(4).collect::<Vec<_>>().join("$"));
    }
    eprintln!(
        "[bench] checks passed: a sign-in of each of the {} users through the pages ends at the client with a code; \
         client_credentials answers; argon2id m=19456,t=2,p=1",
        target.users.len()
    );
    Ok(phc)
}

struct Bench {
    server: Arc<Server>,
    target: Arc<LoginTarget>,
    token_req: Req,
    phc: Arc<String>,
    threads: usize,
    logins: usize,
    token_rate: f64,
    token_conns: usize,
    duration: Duration,
    warm: Option<Duration>,
    quiet: Duration,
}

/// CPU seconds so far: Tessera, PostgreSQL, this process, the whole machine.
fn snapshot(pid: u32) -> [f64; 4] {
    [
        procstat::cpu_secs(pid).unwrap_or(0.0),
        procstat::cpu_secs_by_name("postgres"),
        procstat::self_cpu_secs(),
        procstat::machine_busy_secs(),
    ]
}

impl Bench {
    async fn measure(&self, round: usize, kind: Kind) -> Result<Vec<Run>> {
        if !self.quiet.is_zero() {
            wait_quiet(self.quiet).await;
        }
        if let Some(warm) = self.warm {
            let m = self.once(kind, warm).await?;
            let warm_errors = m.main.total_errors() + m.flood.map_or(0, |(f, _)| f.total_errors());
            if warm_errors > 0 {
                eprintln!("[bench]   {warm_errors} errors during the warm-up");
            }
        }
        let before = snapshot(self.server.cfg.pid);
        let measured = self.once(kind, self.duration).await?;
        let after = snapshot(self.server.cfg.pid);
        let secs = measured.main.elapsed.as_secs_f64();
        let secs = if secs < 0.05 { f64::NAN } else { secs };
        let cores = |i: usize| ((after[i] - before[i]) / secs).max(0.0);
        let (cpu_tessera, cpu_pg, cpu_gen) = (cores(0), cores(1), cores(2));
        let cpu_other = ((after[3] - before[3]) / secs - cpu_tessera - cpu_pg - cpu_gen).max(0.0);
        let mut runs = vec![Run {
            round,
            kind,
            out: measured.main,
            consent: measured.consent,
            cpu_tessera,
            cpu_pg,
            cpu_gen,
            cpu_other,
        }];
        if let Some((out, consent)) = measured.flood {
            runs.push(Run { round, kind: Kind::LoginsFlood, out, consent, cpu_tessera, cpu_pg, cpu_gen, cpu_other });
        }
        for r in &runs {
            eprintln!(
                "[bench]   {:<22} {:.1}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}; CPU tessera {:.2} pg {:.2} gen {:.2} other {:.2}",
                r.kind.label(),
                r.ok_per_sec(),
                r.out.ms(0.5),
                r.out.ms(0.99),
                r.out.total_errors(),
                r.cpu_tessera,
                r.cpu_pg,
                r.cpu_gen,
                r.cpu_other
            );
        }
        Ok(runs)
    }

    /// One run of `kind` for `duration`.
    async fn once(&self, kind: Kind, duration: Duration) -> Result<Measured> {
        let tokens = || tokens_at_rate(&self.server, &self.token_req, self.token_rate, self.token_conns, duration);
        let logins = || sign_ins(&self.server, &self.target, self.logins, duration);
        Ok(match kind {
            Kind::Argon2 => {
                let (phc, password, threads) = (self.phc.clone(), self.target.users[0].1.clone(), self.threads);
                let main =
                    tokio::task::spawn_blocking(move || argon2_alone(&phc, &password, threads, duration)).await?;
                Measured { main, consent: 0, flood: None }
            }
            Kind::Logins | Kind::LoginsFlood => {
                let (main, consent) = logins().await?;
                Measured { main, consent, flood: None }
            }
            Kind::Tokens => Measured { main: tokens().await?, consent: 0, flood: None },
            Kind::TokensFlood => {
                let (main, flood) = tokio::join!(tokens(), logins());
                Measured { main: main?, consent: 0, flood: Some(flood?) }
            }
        })
    }
}

/// What one run gave: its outcome, how many of its sign-ins ended on the consent page, and
/// during a flood the flood's sign-ins.
struct Measured {
    main: Outcome,
    consent: u64,
    flood: Option<(Outcome, u64)>,
}

/// `threads` threads verifying `password` against `phc` back to back until `duration` has passed,
/// exactly as Tessera's pool does (`Argon2::default().verify_password`).
fn argon2_alone(phc: &str, password: &str, threads: usize, duration: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + duration;
    let per_thread = MAX_OPS / threads as u64;
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let (mut ok, mut bad, mut hist) = (0u64, 0u64, new_hist());
                    while Instant::now() < deadline && ok + bad < per_thread {
                        let t0 = Instant::now();
                        if Argon2::default().verify_password(password.as_bytes(), phc).is_ok() {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                        hist.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                    }
                    (ok, bad, hist, Instant::now())
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut out = Outcome {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        hist: new_hist(),
        exhausted: false,
    };
    let mut last = start;
    for (ok, bad, hist, finished) in results {
        out.ok += ok;
        if bad > 0 {
            *out.errors.entry("argon2: verification failed".into()).or_default() += bad;
        }
        out.hist.add(&hist).ok();
        last = last.max(finished);
    }
    out.elapsed = last - start;
    out
}

/// client_credentials at `rate` requests per second on a fixed schedule, spread over `conns`
/// keep-alive connections: connection k sends its j-th request at start + (j·conns + k) / rate.
/// A request's latency counts from when it was due if its connection was still busy then (so a
/// slow answer also counts against the requests it delayed), else from when it was sent (so the
/// timer's millisecond granularity does not count).
async fn tokens_at_rate(server: &Server, req: &Req, rate: f64, conns: usize, duration: Duration) -> Result<Outcome> {
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::connect(server.addr, &server.host).await?);
    }
    let start = tokio::time::Instant::now();
    let deadline = start + duration;
    let sampled = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (k, mut conn) in connections.into_iter().enumerate() {
        let (req, sampled) = (req.clone(), sampled.clone());
        handles.push(tokio::spawn(async move {
            let mut source = Fixed { reqs: vec![req], i: 0, must_contain: "\"access_token\"" };
            let (mut ok, mut errors, mut samples, mut hist) =
                (0u64, BTreeMap::<String, u64>::new(), Vec::new(), new_hist());
            for j in 0..MAX_OPS {
                let due = start + Duration::from_secs_f64((j as f64 * conns as f64 + k as f64) / rate);
                if due >= deadline {
                    break;
                }
                let now = tokio::time::Instant::now();
                let from = if now < due {
                    tokio::time::sleep_until(due).await;
                    tokio::time::Instant::now()
                } else {
                    due
                };
                let Some(req) = source.next() else { break };
                let answer = tokio::time::timeout(STEP_TIMEOUT, conn.send(&req)).await;
                hist.saturating_record(from.elapsed().as_micros().max(1) as u64);
                let failure = match answer {
                    Ok(Ok((status, body))) => source.check(status, &body).err().map(|e| (e, false)),
                    Ok(Err(e)) => Some((format!("transport: {}", workload::root_cause(&e)), true)),
                    Err(_) => Some(("timeout".to_owned(), true)),
                };
                match failure {
                    None => ok += 1,
                    Some((kind, transport)) => {
                        if sampled.fetch_add(1, Ordering::Relaxed) < 3 {
                            samples.push(format!("token: {kind}"));
                        }
                        *errors.entry(format!("token: {kind}")).or_default() += 1;
                        if transport && conn.reconnect().await.is_err() {
                            *errors.entry("token: reconnect failed".into()).or_default() += 1;
                            break;
                        }
                    }
                }
            }
            (ok, errors, samples, hist)
        }));
    }
    let mut out = Outcome {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        hist: new_hist(),
        exhausted: false,
    };
    for h in handles {
        let (ok, errors, samples, hist) = h.await?;
        out.ok += ok;
        for (k, v) in errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.error_samples.extend(samples);
        out.hist.add(&hist).ok();
    }
    // From the first request due to the last answer.
    out.elapsed = start.elapsed();
    Ok(out)
}

/// `conns` connections, each signing in back to back until `duration` has passed, every
/// sign-in a new browser (no cookies). Returns the outcome and how many sign-ins ended on the
/// consent page.
async fn sign_ins(
    server: &Server,
    target: &Arc<LoginTarget>,
    conns: usize,
    duration: Duration,
) -> Result<(Outcome, u64)> {
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::connect(server.addr, &server.host).await?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let per_conn = MAX_OPS / conns as u64;
    let sampled = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for (k, mut conn) in connections.into_iter().enumerate() {
        let (target, sampled) = (target.clone(), sampled.clone());
        handles.push(tokio::spawn(async move {
            let (mut ok, mut consent, mut errors, mut samples, mut hist) =
                (0u64, 0u64, BTreeMap::<String, u64>::new(), Vec::new(), new_hist());
            let mut n = 0;
            while Instant::now() < deadline && n < per_conn {
                n += 1;
                let t0 = Instant::now();
                let result = sign_in(&mut conn, &target, k).await;
                hist.saturating_record(t0.elapsed().as_micros().max(1) as u64);
                match result {
                    Ok(SignedIn::Code) => ok += 1,
                    Ok(SignedIn::Consent) => {
                        ok += 1;
                        consent += 1;
                    }
                    Err(f) => {
                        if sampled.fetch_add(1, Ordering::Relaxed) < 3 {
                            samples.push(format!("{}: {}", f.kind, f.detail));
                        }
                        *errors.entry(f.kind).or_default() += 1;
                        if f.transport && conn.reconnect().await.is_err() {
                            *errors.entry("reconnect failed".into()).or_default() += 1;
                            break;
                        }
                    }
                }
            }
            (ok, consent, errors, samples, hist, Instant::now())
        }));
    }
    let mut out = Outcome {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: BTreeMap::new(),
        error_samples: Vec::new(),
        hist: new_hist(),
        exhausted: false,
    };
    let (mut consent, mut last) = (0, start);
    for h in handles {
        let (ok, c, errors, samples, hist, finished) = h.await?;
        out.ok += ok;
        consent += c;
        for (k, v) in errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.error_samples.extend(samples);
        out.hist.add(&hist).ok();
        last = last.max(finished);
    }
    out.elapsed = last - start;
    Ok((out, consent))
}

/// Where a successful sign-in ended.
enum SignedIn {
    /// Back at the client's redirect URI with a code (the consent was remembered).
    Code,
    /// On the consent page.
    Consent,
}

struct Failure {
    /// Short, for counting: the step and what went wrong.
    kind: String,
    detail: String,
    /// The connection may be broken: reconnect.
    transport: bool,
}

fn fail(kind: impl Into<String>, detail: impl Into<String>) -> Failure {
    Failure { kind: kind.into(), detail: detail.into(), transport: false }
}

/// The cookies of one browser.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            let Some((name, val)) = value.split(';').next().and_then(|kv| kv.split_once('=')) else { continue };
            let (name, val) = (name.trim(), val.trim());
            self.0.retain(|(n, _)| n != name);
            if !val.is_empty() && !value.to_ascii_lowercase().contains("max-age=0") {
                self.0.push((name.to_owned(), val.to_owned()));
            }
        }
    }

    fn header(&self) -> Option<HeaderValue> {
        let joined = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        if joined.is_empty() { None } else { HeaderValue::from_str(&joined).ok() }
    }
}

/// Send one step of a sign-in with the browser's cookies, and keep the cookies it sets.
async fn step(
    conn: &mut Conn,
    jar: &mut Jar,
    name: &str,
    mut req: Req,
) -> Result<(StatusCode, HeaderMap, Bytes), Failure> {
    if let Some(cookie) = jar.header() {
        req.headers.push((COOKIE, cookie));
    }
    match tokio::time::timeout(STEP_TIMEOUT, conn.send_full(&req)).await {
        Ok(Ok((status, headers, body))) => {
            jar.absorb(&headers);
            Ok((status, headers, body))
        }
        Ok(Err(e)) => Err(Failure {
            kind: format!("{name}: transport: {}", workload::root_cause(&e)),
            detail: String::new(),
            transport: true,
        }),
        Err(_) => Err(Failure { kind: format!("{name}: timeout"), detail: String::new(), transport: true }),
    }
}

/// Where a redirect points, resolved against the page that answered it.
fn location(name: &str, page: &Url, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Url, Failure> {
    if !status.is_redirection() {
        return Err(fail(
            format!("{name}: HTTP {} (want a redirect)", status.as_u16()),
            flow::excerpt(&String::from_utf8_lossy(body)),
        ));
    }
    let loc = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| fail(format!("{name}: redirect without Location"), ""))?;
    page.join(loc).map_err(|e| fail(format!("{name}: bad Location"), format!("{loc}: {e}")))
}

/// One complete password sign-in as a new browser: `GET /authorize` (PKCE, public client) →
/// the login page (CSRF token in the form, session cookie) → `POST` of the form with the
/// username and password of user `user` (mod the number of users) → the redirect back to the
/// client with a code and the same state.
async fn sign_in(conn: &mut Conn, t: &LoginTarget, user: usize) -> Result<SignedIn, Failure> {
    let (username, password) = &t.users[user % t.users.len()];
    let mut jar = Jar::default();
    let verifier = flow::random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = flow::random_token();
    let mut authorize = t.authorize.clone();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &t.client_id)
        .append_pair("redirect_uri", &t.redirect_uri)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("resource", &t.resource)
        .append_pair("scope", SCOPE);

    // 1. The authorization request: a redirect to the login page.
    let (status, headers, body) = step(conn, &mut jar, "authorize", Req::get(&path_of(authorize.as_str()))).await?;
    let login = location("authorize", &authorize, status, &headers, &body)?;
    if login.origin() != t.base.origin() {
        return Err(fail("authorize: redirected away from Tessera", login.to_string()));
    }

    // 2. The login page.
    let (status, _, body) = step(conn, &mut jar, "login page", Req::get(&path_of(login.as_str()))).await?;
    let html = String::from_utf8_lossy(&body);
    if status != StatusCode::OK || !html.contains("name=\"password\"") {
        return Err(fail(
            format!("login page: HTTP {} without a password form", status.as_u16()),
            flow::excerpt(&html),
        ));
    }
    let action = flow::form_action(&html).ok_or_else(|| fail("login page: no form action", flow::excerpt(&html)))?;
    let post_to = login.join(&action).map_err(|e| fail("login page: bad form action", format!("{action}: {e}")))?;
    if post_to.origin() != t.base.origin() {
        return Err(fail("login page: form posts away from Tessera", post_to.to_string()));
    }
    let mut fields = flow::hidden_inputs(&html);
    fields.push(("username".into(), username.clone()));
    fields.push(("password".into(), password.clone()));
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // 3. The form, as a browser posts it from Tessera's own page.
    let mut post = Req::post_form(&path_of(post_to.as_str()), form(&pairs), None);
    let origin = HeaderValue::from_str(&flow::origin(&t.base)).map_err(|e| fail("bad origin", e.to_string()))?;
    post.headers.push((ORIGIN, origin));
    post.headers.push((HeaderName::from_static("sec-fetch-site"), HeaderValue::from_static("same-origin")));
    let (status, headers, body) = step(conn, &mut jar, "login", post).await?;
    let next = location("login", &post_to, status, &headers, &body)?;
    if next.as_str().starts_with(&t.redirect_uri) {
        let q: BTreeMap<_, _> = next.query_pairs().into_owned().collect();
        if let Some(err) = q.get("error") {
            return Err(fail(format!("login: the client got error={err}"), next.to_string()));
        }
        if q.get("state") != Some(&state) {
            return Err(fail("login: state mismatch", next.to_string()));
        }
        if q.get("code").is_none_or(String::is_empty) {
            return Err(fail("login: no code", next.to_string()));
        }
        return Ok(SignedIn::Code);
    }
    if next.origin() == t.base.origin() && next.path().contains("consent") {
        return Ok(SignedIn::Consent);
    }
    Err(fail("login: redirected elsewhere (not signed in?)", next.to_string()))
}

fn report(runs: &[Run], args: &LoginArgs, bench: &Bench, label: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} round{} of {} s per run (order alternating within each pair), {} cores, keep-alive HTTP/1.1 on loopback{}.{}\n\
         argon2id alone: {} thread{} in the load generator (Tessera's pool: {}), argon2 0.6.0, m=19456 t=2 p=1. \
         Sign-ins: {} connections, closed loop, each sign-in a new browser (GET /authorize → login page → POST /login → \
         redirect to the client with a code), as {} users. Tokens: client_credentials at {} req/s on a fixed schedule over {} connections; \
         during the flood, the same sign-ins run alongside.\n",
        args.rounds,
        if args.rounds == 1 { "" } else { "s" },
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.smoke { " (smoke mode: no warm-up)" } else { "" },
        if label.is_empty() { String::new() } else { format!(" {label}") },
        bench.threads,
        if bench.threads == 1 { "" } else { "s" },
        tessera_pool_size(),
        bench.logins,
        bench.target.users.len(),
        args.token_rate,
        bench.token_conns,
    );
    let mut rows = vec![
        [
            "round",
            "run",
            "ok/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "CPU tessera",
            "CPU pg",
            "CPU gen",
            "CPU other",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in runs {
        let o = &r.out;
        rows.push(vec![
            r.round.to_string(),
            r.kind.label().to_owned(),
            fmt_f(r.ok_per_sec(), 1),
            fmt_f(o.ms(0.5), 2),
            fmt_f(o.ms(0.99), 2),
            fmt_f(o.max_ms(), 1),
            if o.total_errors() > 0 { format!("**{}**", o.total_errors()) } else { "0".into() },
            fmt_f(r.cpu_tessera, 2),
            fmt_f(r.cpu_pg, 2),
            fmt_f(r.cpu_gen, 2),
            fmt_f(r.cpu_other, 2),
        ]);
    }
    s.push_str(&table(&rows, 2));

    // Runs that saw other work on the machine are left out of the medians and the pairs when
    // there are quiet ones: an argon2-alone run that shared the cores with a build would make
    // the sign-ins look better than argon2 itself.
    let quiet = |r: &Run| r.cpu_other <= QUIET_OTHER;
    let of = |kind: Kind| {
        let all: Vec<&Run> = runs.iter().filter(|r| r.kind == kind).collect();
        let calm: Vec<&Run> = all.iter().copied().filter(|r| quiet(r)).collect();
        if calm.is_empty() { all } else { calm }
    };
    let med = |kind: Kind, f: &dyn Fn(&Run) -> f64| median(of(kind).into_iter().map(f).collect());
    let in_round = |kind: Kind, k: usize| runs.iter().find(|r| r.round == k && r.kind == kind);
    let pairs = |a: Kind, b: Kind| {
        let all: Vec<(&Run, &Run)> =
            (1..=args.rounds).filter_map(|k| Some((in_round(a, k)?, in_round(b, k)?))).collect();
        let calm: Vec<(&Run, &Run)> = all.iter().copied().filter(|(x, y)| quiet(x) && quiet(y)).collect();
        let used = if calm.is_empty() { all.clone() } else { calm };
        (used, all.len())
    };
    let paired =
        |a: Kind, b: Kind, f: &dyn Fn(&Run, &Run) -> f64| median(pairs(a, b).0.iter().map(|(x, y)| f(x, y)).collect());
    let used = |a: Kind, b: Kind| {
        let (used, all) = pairs(a, b);
        let calm = used.iter().all(|(x, y)| quiet(x) && quiet(y)) && !used.is_empty();
        format!(
            "{} of {all} round{}{}",
            used.len(),
            if all == 1 { "" } else { "s" },
            if calm { "" } else { ", none quiet" }
        )
    };
    let rate = |r: &Run| r.ok_per_sec();
    let p50 = |r: &Run| r.out.ms(0.5);
    let p99 = |r: &Run| r.out.ms(0.99);
    let max = |r: &Run| r.out.max_ms();
    let ratio = paired(Kind::Argon2, Kind::Logins, &|a, l| l.ok_per_sec() / a.ok_per_sec().max(1e-9));
    let flood_ratio = paired(Kind::Logins, Kind::LoginsFlood, &|l, f| f.ok_per_sec() / l.ok_per_sec().max(1e-9));
    let verdict = |ok: bool, value: f64| {
        if value.is_nan() {
            "n/a"
        } else if ok {
            "PASS"
        } else {
            "FAIL"
        }
    };
    let signed = |v: f64| if v.is_nan() { "-".to_owned() } else { format!("{v:+.2}") };
    let logins = vec![
        ["median", "argon2id alone", "sign-ins", "sign-ins ÷ argon2", "target", "verdict"].map(str::to_owned).to_vec(),
        vec![
            "per second".into(),
            fmt_f(med(Kind::Argon2, &rate), 1),
            fmt_f(med(Kind::Logins, &rate), 1),
            format!("{}x", fmt_f(ratio, 3)),
            "≥ 0.90x".into(),
            verdict(ratio >= 0.9, ratio).into(),
        ],
        vec![
            "p50 / p99 ms (one verification; one sign-in)".into(),
            format!("{} / {}", fmt_f(med(Kind::Argon2, &p50), 1), fmt_f(med(Kind::Argon2, &p99), 1)),
            format!("{} / {}", fmt_f(med(Kind::Logins, &p50), 1), fmt_f(med(Kind::Logins, &p99), 1)),
            "-".into(),
            "-".into(),
            String::new(),
        ],
        vec![
            "CPU ms per operation: load generator; Tessera + PostgreSQL".into(),
            fmt_f(med(Kind::Argon2, &|r| r.cpu_ms_per_op(r.cpu_gen)), 2),
            fmt_f(med(Kind::Logins, &|r| r.cpu_ms_per_op(r.cpu_tessera + r.cpu_pg)), 2),
            format!(
                "{} ms beyond argon2",
                signed(paired(Kind::Argon2, Kind::Logins, &|a, l| {
                    l.cpu_ms_per_op(l.cpu_tessera + l.cpu_pg) - a.cpu_ms_per_op(a.cpu_gen)
                }))
            ),
            "-".into(),
            String::new(),
        ],
    ];
    let _ = writeln!(
        s,
        "\nSign-ins against argon2id alone, medians over the rounds ({}):\n",
        used(Kind::Argon2, Kind::Logins)
    );
    s.push_str(&table(&logins, 1));
    let p99_flood = med(Kind::TokensFlood, &p99);
    let tokens = vec![
        ["median", "alone", "during the flood", "difference", "target", "verdict"].map(str::to_owned).to_vec(),
        vec![
            "token requests answered per second".into(),
            fmt_f(med(Kind::Tokens, &rate), 0),
            fmt_f(med(Kind::TokensFlood, &rate), 0),
            "-".into(),
            format!("{}", args.token_rate),
            String::new(),
        ],
        vec![
            "token p50 (ms)".into(),
            fmt_f(med(Kind::Tokens, &p50), 2),
            fmt_f(med(Kind::TokensFlood, &p50), 2),
            signed(paired(Kind::Tokens, Kind::TokensFlood, &|a, f| f.out.ms(0.5) - a.out.ms(0.5))),
            "-".into(),
            String::new(),
        ],
        vec![
            "token p99 (ms)".into(),
            fmt_f(med(Kind::Tokens, &p99), 2),
            fmt_f(p99_flood, 2),
            signed(paired(Kind::Tokens, Kind::TokensFlood, &|a, f| f.out.ms(0.99) - a.out.ms(0.99))),
            "< 20 ms during the flood".into(),
            verdict(p99_flood < 20.0, p99_flood).into(),
        ],
        vec![
            "token max (ms)".into(),
            fmt_f(med(Kind::Tokens, &max), 1),
            fmt_f(med(Kind::TokensFlood, &max), 1),
            "-".into(),
            "-".into(),
            String::new(),
        ],
        vec![
            "sign-ins per second (alone; during the flood)".into(),
            fmt_f(med(Kind::Logins, &rate), 1),
            fmt_f(med(Kind::LoginsFlood, &rate), 1),
            format!("{}x", fmt_f(flood_ratio, 3)),
            "-".into(),
            String::new(),
        ],
    ];
    let _ = writeln!(
        s,
        "\nToken requests alone and during a sign-in flood, medians over the rounds ({}):\n",
        used(Kind::Tokens, Kind::TokensFlood)
    );
    s.push_str(&table(&tokens, 1));
    let _ = writeln!(
        s,
        "\nRatios and differences are medians over rounds of each round's pair (the two runs of a pair saw nearly the \
         same machine). Medians and pairs leave out runs with CPU other above {QUIET_OTHER} cores (other work on the \
         machine) when there are quiet ones; \"none quiet\" says all were used. Token latency counts from when a request was due when its connection was still busy then, \
         else from when it was sent. The p99 target is the token endpoint's in bench/run. CPU tessera / pg / gen / \
         other: cores used during the run by Tessera / all PostgreSQL processes / the load generator (the argon2 \
         threads of the argon2-alone runs) / everything else: a run with CPU other well above 0.1 saw other work."
    );
    let consent: u64 = runs.iter().map(|r| r.consent).sum();
    if consent > 0 {
        let _ = writeln!(s, "\n{consent} sign-ins ended on the consent page (counted as signed in).");
    }
    let errors: Vec<String> = runs
        .iter()
        .filter(|r| r.out.total_errors() > 0)
        .map(|r| {
            format!(
                "round {} {}: {} errors: {:?}\n      {}",
                r.round,
                r.kind.label(),
                r.out.total_errors(),
                r.out.errors,
                r.out.error_samples.join("\n      ")
            )
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\n!!! ERRORS (every run must have zero):");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}
