//! `tessera-loadgen gateway`: the gateway benchmark. The same small MCP tool call (`tools/call`
//! of `echo` with a tiny argument, JSON answer) sent directly to the upstream MCP server and
//! through `tessera gateway` in front of it, alternately, for several rounds, in one process on
//! one machine; then one table of the rounds, their medians and the gateway's cost as ratios
//! and differences. `bench/gateway` starts the servers, seeds Tessera and writes the
//! configuration this reads.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::header::{ACCEPT, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::conn::{Conn, Req};
use crate::workload::{self, Fixed, Outcome, Source};
use crate::{flow, fmt_f, mb, procstat, wait_quiet};

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// JSON file describing the upstream, the gateway and the client (written by bench/gateway).
    #[arg(long)]
    config: PathBuf,
    /// Seconds each measured run lasts (each target, each round).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Concurrent connections (one request in flight on each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rounds; each measures the upstream directly and through the gateway.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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
    /// The upstream's MCP endpoint, called directly.
    direct_url: String,
    upstream_pid: u32,
    /// The gateway's MCP endpoint (also the resource URI, the tokens' audience).
    gateway_url: String,
    gateway_pid: u32,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    /// Scopes to ask for: the policy's baseline and the echo tool's.
    scope: String,
    /// What was measured, for the table's heading.
    #[serde(default)]
    label: String,
}

/// The tool call measured: small arguments, small JSON answer.
const CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello from the bench"}}}"#;
/// What the answer must contain (the echo, as the upstream writes it and the gateway passes it).
const ECHOED: &str = r#""text":"hello from the bench""#;
/// A tool the benchmark's policy does not name: the gateway must refuse it.
const DENIED_CALL: &str =
    r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"not_in_policy","arguments":{}}}"#;
const PROTOCOL_VERSION: &str = "2025-06-18";

/// Where the load goes: the upstream directly, or the gateway.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    fn new(name: &'static str, url: &str) -> Result<Self> {
        let parsed = Url::parse(url).with_context(|| format!("{name} URL {url}"))?;
        flow::check_loopback(&parsed)?;
        let host =
            format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port_or_known_default().unwrap_or(80));
        let addr = host.to_socket_addrs()?.next().ok_or_else(|| anyhow!("cannot resolve {host}"))?;
        Ok(Self { name, addr, host, path: parsed[url::Position::BeforePath..].to_owned() })
    }

    /// The MCP request every worker sends: the same bytes to both targets (the upstream ignores
    /// the bearer token).
    fn request(&self, body: &'static str, bearer: Option<&HeaderValue>) -> Req {
        let headers = vec![
            (ACCEPT, HeaderValue::from_static("application/json, text/event-stream")),
            (HeaderName::from_static("mcp-protocol-version"), HeaderValue::from_static(PROTOCOL_VERSION)),
        ];
        Req::post_json(&self.path, Bytes::from_static(body.as_bytes()), bearer.cloned(), headers)
    }
}

/// One measured run.
struct Run {
    round: usize,
    target: &'static str,
    out: Outcome,
    /// Peak VmRSS of the gateway during the run, kB.
    gateway_rss_kb: u64,
    /// Cores used during the run by the gateway, the upstream, the load generator, the rest.
    cpu_gateway: f64,
    cpu_upstream: f64,
    cpu_gen: f64,
    cpu_other: f64,
}

impl Run {
    fn requests(&self) -> u64 {
        self.out.ok + self.out.total_errors()
    }

    /// CPU microseconds per request of a process that used `cores` during the run.
    fn us_per_request(&self, cores: f64) -> f64 {
        let n = self.requests();
        if n == 0 { f64::NAN } else { cores * self.out.elapsed.as_secs_f64() * 1e6 / n as f64 }
    }
}

pub fn main(args: GatewayArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: GatewayArgs) -> Result<()> {
    let cfg: Config = serde_json::from_str(
        &std::fs::read_to_string(&args.config).with_context(|| format!("reading {}", args.config.display()))?,
    )?;
    if !(0.2..=600.0).contains(&args.duration)
        || !(1..=1024).contains(&args.concurrency)
        || !(1..=20).contains(&args.rounds)
    {
        bail!("--duration must be 0.2..600 s, --concurrency 1..1024 and --rounds 1..20");
    }
    let direct = Target::new("direct", &cfg.direct_url)?;
    let gateway = Target::new("gateway", &cfg.gateway_url)?;
    let token = access_token(&cfg).await?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))?;
    check(&direct, &gateway, &bearer).await?;

    let duration = Duration::from_secs_f64(args.duration);
    let quiet = Duration::from_secs_f64(args.wait_quiet.clamp(0.0, 120.0));
    let rss = procstat::RssSampler::start(cfg.gateway_pid);
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        // Alternate the order (direct first, then gateway first, ...) so that a drift of the
        // machine over time does not always favour the same target.
        let order = if round % 2 == 1 { [&direct, &gateway] } else { [&gateway, &direct] };
        for target in order {
            eprintln!("[bench] round {round}/{}: {:<7} ...", args.rounds, target.name);
            if !quiet.is_zero() {
                wait_quiet(quiet).await;
            }
            let r = measure(&args, &cfg, target, &bearer, round, duration, &rss).await?;
            eprintln!(
                "[bench]   {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, errors {}, CPU gateway {:.2} upstream {:.2} gen {:.2} other {:.2}",
                r.out.rps(),
                r.out.ms(0.5),
                r.out.ms(0.99),
                r.out.total_errors(),
                r.cpu_gateway,
                r.cpu_upstream,
                r.cpu_gen,
                r.cpu_other
            );
            runs.push(r);
        }
    }
    let hwm_kb = procstat::status_kb(cfg.gateway_pid, "VmHWM");
    drop(rss);
    let report = report(&runs, hwm_kb, &args, &cfg);
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

/// An access token for the gateway's resource, from client_credentials.
async fn access_token(cfg: &Config) -> Result<String> {
    let resource = &cfg.gateway_url;
    let res = flow::http_client(false)?
        .post(&cfg.token_endpoint)
        .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
        .form(&[("grant_type", "client_credentials"), ("resource", resource), ("scope", &cfg.scope)])
        .send()
        .await
        .with_context(|| format!("POST {}", cfg.token_endpoint))?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("client_credentials for {resource} answered {status}: {body}"))
}

/// Before measuring: the call works directly and through the gateway, and the gateway really
/// guards (no token: 401; a tool the policy does not name: 403; neither reaches the upstream's
/// answer).
async fn check(direct: &Target, gateway: &Target, bearer: &HeaderValue) -> Result<()> {
    for (target, body, auth, want, contains) in [
        (direct, CALL, Some(bearer), 200, ECHOED),
        (gateway, CALL, Some(bearer), 200, ECHOED),
        (gateway, CALL, None, 401, "invalid_token"),
        (gateway, DENIED_CALL, Some(bearer), 403, "\"error\""),
    ] {
        let mut conn = Conn::connect(target.addr, &target.host).await?;
        let (status, answer) = tokio::time::timeout(Duration::from_secs(10), conn.send(&target.request(body, auth)))
            .await
            .map_err(|_| anyhow!("{} timed out", target.name))??;
        let text = String::from_utf8_lossy(&answer);
        if status.as_u16() != want || !text.contains(contains) {
            bail!(
                "check failed on {} ({}authorized{}): want {want} with {contains}, got {status}: {}",
                target.name,
                if auth.is_some() { "" } else { "un" },
                if body == DENIED_CALL { ", tool not in the policy" } else { "" },
                text.chars().take(300).collect::<String>()
            );
        }
    }
    eprintln!(
        "[bench] checks passed: the call answers directly and through the gateway; the gateway refuses no token (401) and a tool outside its policy (403)"
    );
    Ok(())
}

async fn measure(
    args: &GatewayArgs,
    cfg: &Config,
    target: &Target,
    bearer: &HeaderValue,
    round: usize,
    duration: Duration,
    rss: &procstat::RssSampler,
) -> Result<Run> {
    let sources = || -> Vec<Box<dyn Source>> {
        let req = target.request(CALL, Some(bearer));
        (0..args.concurrency)
            .map(|_| Box::new(Fixed { reqs: vec![req.clone()], i: 0, must_contain: ECHOED }) as Box<dyn Source>)
            .collect()
    };
    let mut warm_errors = None;
    if !args.smoke {
        let warm = Duration::from_secs_f64((duration.as_secs_f64() / 5.0).clamp(0.5, 2.0));
        let (out, _) = workload::run(target.addr, &target.host, sources(), warm).await?;
        if out.total_errors() > 0 {
            warm_errors = Some(out);
        }
    }
    rss.take_peak();
    let snapshot = || {
        (
            procstat::cpu_secs(cfg.gateway_pid).unwrap_or(0.0),
            procstat::cpu_secs(cfg.upstream_pid).unwrap_or(0.0),
            procstat::self_cpu_secs(),
            procstat::machine_busy_secs(),
        )
    };
    let before = snapshot();
    let (mut out, _) = workload::run(target.addr, &target.host, sources(), duration).await?;
    let after = snapshot();
    let gateway_rss_kb = rss.take_peak();
    if let Some(warm) = warm_errors {
        for (kind, n) in warm.errors {
            *out.errors.entry(format!("warm-up: {kind}")).or_default() += n;
        }
        out.error_samples.extend(warm.error_samples.into_iter().map(|e| format!("warm-up: {e}")));
    }
    let secs = if out.elapsed.as_secs_f64() < 0.05 { f64::NAN } else { out.elapsed.as_secs_f64() };
    let cores = |a: f64, b: f64| ((b - a) / secs).max(0.0);
    let (cpu_gateway, cpu_upstream, cpu_gen) =
        (cores(before.0, after.0), cores(before.1, after.1), cores(before.2, after.2));
    let all = (after.3 - before.3) / secs;
    let cpu_other = (all - cpu_gateway - cpu_upstream - cpu_gen).max(0.0);
    Ok(Run { round, target: target.name, out, gateway_rss_kb, cpu_gateway, cpu_upstream, cpu_gen, cpu_other })
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Markdown table rows, aligned (readable as plain text).
pub fn table(rows: &[Vec<String>], numeric_from: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0).max(3))
        .collect();
    let mut s = String::new();
    for (k, row) in rows.iter().enumerate() {
        let cells: Vec<String> = (0..cols)
            .map(|i| {
                let c = row.get(i).map_or("", String::as_str);
                if i >= numeric_from { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) }
            })
            .collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
        if k == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| if i >= numeric_from { format!("{}:", "-".repeat(w + 1)) } else { "-".repeat(w + 2) })
                .collect();
            let _ = writeln!(s, "|{}|", rule.join("|"));
        }
    }
    s
}

fn report(runs: &[Run], hwm_kb: Option<u64>, args: &GatewayArgs, cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`tools/call` of `echo` (`{CALL}`, {} bytes; JSON answer), {} s per run, concurrency {}, {} round{} \
         (order alternating), keep-alive HTTP/1.1 on loopback, {} cores{}.{}\n",
        CALL.len(),
        args.duration,
        args.concurrency,
        args.rounds,
        if args.rounds == 1 { "" } else { "s" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.smoke { " (smoke mode: no warm-up)" } else { "" },
        if cfg.label.is_empty() { String::new() } else { format!(" {}", cfg.label) },
    );
    let mut rows = vec![
        [
            "round",
            "target",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "gw RSS MB",
            "CPU gw",
            "CPU up",
            "CPU gen",
            "CPU other",
            "gw µs/call",
            "up µs/call",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in runs {
        let o = &r.out;
        let gw = r.target == "gateway";
        rows.push(vec![
            r.round.to_string(),
            r.target.to_owned(),
            fmt_f(o.rps(), 0),
            fmt_f(o.ms(0.5), 3),
            fmt_f(o.ms(0.99), 3),
            fmt_f(o.max_ms(), 1),
            if o.total_errors() > 0 { format!("**{}**", o.total_errors()) } else { "0".into() },
            if gw { fmt_f(mb(r.gateway_rss_kb), 1) } else { "-".into() },
            fmt_f(r.cpu_gateway, 2),
            fmt_f(r.cpu_upstream, 2),
            fmt_f(r.cpu_gen, 2),
            fmt_f(r.cpu_other, 2),
            if gw { fmt_f(r.us_per_request(r.cpu_gateway), 1) } else { "-".into() },
            fmt_f(r.us_per_request(r.cpu_upstream), 1),
        ]);
    }
    s.push_str(&table(&rows, 2));

    // Medians of each target's runs, and of the per-round comparisons (each round's gateway run
    // against the same round's direct run: the pairs saw the same state of the machine).
    let of = |name: &'static str| runs.iter().filter(move |r| r.target == name);
    let med = |name: &'static str, f: &dyn Fn(&Run) -> f64| median(of(name).map(f).collect());
    let pairs: Vec<(&Run, &Run)> = (1..=args.rounds)
        .filter_map(|k| {
            let d = runs.iter().find(|r| r.round == k && r.target == "direct")?;
            let g = runs.iter().find(|r| r.round == k && r.target == "gateway")?;
            Some((d, g))
        })
        .collect();
    let paired = |f: &dyn Fn(&Run, &Run) -> f64| median(pairs.iter().map(|(d, g)| f(d, g)).collect());
    let rps = |r: &Run| r.out.rps();
    let p50 = |r: &Run| r.out.ms(0.5);
    let p99 = |r: &Run| r.out.ms(0.99);
    let ratio = paired(&|d, g| g.out.rps() / d.out.rps().max(1e-9));
    let added50 = paired(&|d, g| g.out.ms(0.5) - d.out.ms(0.5));
    let added99 = paired(&|d, g| g.out.ms(0.99) - d.out.ms(0.99));
    let peak_kb = of("gateway").map(|r| r.gateway_rss_kb).max().unwrap_or(0).max(hwm_kb.unwrap_or(0));
    let verdict = |ok: bool, value: f64| {
        if value.is_nan() {
            "n/a"
        } else if ok {
            "PASS"
        } else {
            "FAIL"
        }
    };
    let signed = |v: f64| if v.is_nan() { "-".to_owned() } else { format!("{v:+.3}") };
    let summary = vec![
        ["median", "direct", "gateway", "gateway vs direct", "target", "verdict"].map(str::to_owned).to_vec(),
        vec![
            "throughput (req/s)".into(),
            fmt_f(med("direct", &rps), 0),
            fmt_f(med("gateway", &rps), 0),
            format!("{}x", fmt_f(ratio, 2)),
            "≥ 0.80x".into(),
            verdict(ratio >= 0.8, ratio).into(),
        ],
        vec![
            "p50 latency (ms)".into(),
            fmt_f(med("direct", &p50), 3),
            fmt_f(med("gateway", &p50), 3),
            format!("{} ms", signed(added50)),
            "≤ +0.3 ms".into(),
            verdict(added50 <= 0.3, added50).into(),
        ],
        vec![
            "p99 latency (ms)".into(),
            fmt_f(med("direct", &p99), 3),
            fmt_f(med("gateway", &p99), 3),
            format!("{} ms", signed(added99)),
            "≤ +2 ms".into(),
            verdict(added99 <= 2.0, added99).into(),
        ],
        vec![
            "gateway peak RSS (MB)".into(),
            "-".into(),
            fmt_f(mb(peak_kb), 1),
            "-".into(),
            "< 50 MB".into(),
            verdict(mb(peak_kb) < 50.0, mb(peak_kb)).into(),
        ],
        vec![
            "CPU per call (µs): gateway".into(),
            "-".into(),
            fmt_f(med("gateway", &|r| r.us_per_request(r.cpu_gateway)), 1),
            "-".into(),
            "-".into(),
            String::new(),
        ],
        vec![
            "CPU per call (µs): upstream + load generator".into(),
            fmt_f(med("direct", &|r| r.us_per_request(r.cpu_upstream + r.cpu_gen)), 1),
            fmt_f(med("gateway", &|r| r.us_per_request(r.cpu_upstream + r.cpu_gen)), 1),
            "-".into(),
            "-".into(),
            String::new(),
        ],
    ];
    let _ = writeln!(s, "\nMedians over the {} round{}:\n", pairs.len(), if pairs.len() == 1 { "" } else { "s" });
    s.push_str(&table(&summary, 1));
    let _ = writeln!(
        s,
        "\n\"gateway vs direct\" is the median over rounds of each round's gateway run compared with the same \
         round's direct run (throughput ratio; added p50 and p99 as differences). Gateway peak RSS: the \
         highest VmRSS sampled every 50 ms during the gateway runs and the gateway's VmHWM at the end ({} MB). \
         CPU gw / up / gen / other: cores used during the run by the gateway / the upstream / the load \
         generator / everything else (Tessera's authorization server included, idle after issuing the token). \
         µs/call: CPU time per request.",
        hwm_kb.map_or("-".into(), |kb| fmt_f(mb(kb), 1))
    );
    let errors: Vec<String> = runs
        .iter()
        .filter(|r| r.out.total_errors() > 0)
        .map(|r| {
            format!(
                "round {} {}: {} errors: {:?}\n      {}",
                r.round,
                r.target,
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
