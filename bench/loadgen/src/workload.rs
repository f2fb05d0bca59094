//! The measuring loop: `concurrency` workers, each with one keep-alive connection, sending
//! requests back to back until the deadline, a request budget, or their supply runs out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use tokio::sync::Mutex;

use crate::conn::{Conn, Req};

/// No request may take longer than this; it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Hard cap on requests in one workload run, whatever the duration.
pub const MAX_REQUESTS: u64 = 5_000_000;

/// What one worker sends next and how it judges the answer.
pub trait Source: Send {
    /// `None`: this worker has nothing left to send.
    fn next(&mut self) -> Option<Req>;
    /// `Err(reason)` makes the response an error even with a 2xx status.
    fn check(&mut self, status: StatusCode, body: &[u8]) -> Result<(), String>;
}

/// The same request every time (discovery, JWKS, client credentials, introspection).
pub struct Fixed {
    pub reqs: Vec<Req>,
    pub i: usize,
    pub must_contain: &'static str,
}

impl Source for Fixed {
    fn next(&mut self) -> Option<Req> {
        let r = self.reqs.get(self.i % self.reqs.len().max(1)).cloned();
        self.i = self.i.wrapping_add(1);
        r
    }

    fn check(&mut self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        ok_containing(status, body, self.must_contain)
    }
}

fn ok_containing(status: StatusCode, body: &[u8], needle: &str) -> Result<(), String> {
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    if !needle.is_empty() && !contains(body, needle.as_bytes()) {
        return Err(format!("HTTP {} without {needle}", status.as_u16()));
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Refresh-token chains owned by one worker: each token is used once, and the chain goes on
/// with the token the server returns. A chain whose refresh fails is dropped.
pub struct Chains {
    pub token_path: String,
    pub client_id: String,
    pub chains: Vec<String>,
    pub i: usize,
}

impl Source for Chains {
    fn next(&mut self) -> Option<Req> {
        if self.chains.is_empty() {
            return None;
        }
        self.i %= self.chains.len();
        let form = form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &self.chains[self.i]),
            ("client_id", &self.client_id),
        ]);
        Some(Req::post_form(&self.token_path, form, None))
    }

    fn check(&mut self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        let next = ok_containing(status, body, "refresh_token").and_then(|()| {
            #[derive(serde::Deserialize)]
            struct R {
                refresh_token: String,
            }
            serde_json::from_slice::<R>(body).map(|r| r.refresh_token).map_err(|e| format!("bad JSON: {e}"))
        });
        match next {
            Ok(token) => {
                self.chains[self.i] = token;
                self.i += 1;
                Ok(())
            }
            Err(e) => {
                self.chains.swap_remove(self.i);
                Err(e)
            }
        }
    }
}

/// Items shared by all workers, each handed out once (codes to exchange, tokens to revoke).
pub struct Pool<T> {
    items: Vec<T>,
    next: AtomicUsize,
}

impl<T> Pool<T> {
    pub fn new(items: Vec<T>) -> Arc<Self> {
        Arc::new(Self { items, next: AtomicUsize::new(0) })
    }

    pub fn take(&self) -> Option<&T> {
        self.items.get(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Builds each request from the next pool item.
pub struct FromPool<T: Send + Sync + 'static> {
    pub pool: Arc<Pool<T>>,
    pub build: Arc<dyn Fn(&T) -> Req + Send + Sync>,
    pub must_contain: &'static str,
}

impl<T: Send + Sync + 'static> Source for FromPool<T> {
    fn next(&mut self) -> Option<Req> {
        self.pool.take().map(|item| (self.build)(item))
    }

    fn check(&mut self, status: StatusCode, body: &[u8]) -> Result<(), String> {
        ok_containing(status, body, self.must_contain)
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

pub fn basic(id: &str, secret: &str) -> HeaderValue {
    use base64::Engine as _;
    // RFC 6749 §2.3.1: form-encode id and secret before joining them.
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw));
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What one run measured.
pub struct Outcome {
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    pub hist: Histogram<u64>,
    /// The workers ran out of things to send before the deadline.
    pub exhausted: bool,
}

impl Outcome {
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { (self.ok + self.total_errors()) as f64 / secs } else { 0.0 }
    }

    pub fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() { f64::NAN } else { self.hist.value_at_quantile(q) as f64 / 1000.0 }
    }

    pub fn max_ms(&self) -> f64 {
        if self.hist.is_empty() { f64::NAN } else { self.hist.max() as f64 / 1000.0 }
    }
}

struct WorkerResult {
    ok: u64,
    errors: BTreeMap<String, u64>,
    samples: Vec<String>,
    hist: Histogram<u64>,
    finished: Instant,
    ran_dry: bool,
}

pub fn new_hist() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Run `sources` (one per worker) against `addr` for `duration`. Connections are opened before
/// the clock starts.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    sources: Vec<Box<dyn Source>>,
    duration: Duration,
) -> Result<(Outcome, Vec<Box<dyn Source>>)> {
    let mut conns = Vec::with_capacity(sources.len());
    for _ in 0..sources.len() {
        conns.push(Conn::connect(addr, host).await?);
    }
    let budget = Arc::new(AtomicUsize::new(MAX_REQUESTS as usize));
    let start = Instant::now();
    let deadline = start + duration;
    let samples = Arc::new(Mutex::new(0usize));
    let mut handles = Vec::new();
    for (mut source, mut conn) in sources.into_iter().zip(conns) {
        let budget = budget.clone();
        let samples = samples.clone();
        handles.push(tokio::spawn(async move {
            let mut r = WorkerResult {
                ok: 0,
                errors: BTreeMap::new(),
                samples: Vec::new(),
                hist: new_hist(),
                finished: start,
                ran_dry: false,
            };
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                    break;
                }
                let Some(req) = source.next() else {
                    r.ran_dry = true;
                    break;
                };
                let t0 = Instant::now();
                let answer = tokio::time::timeout(REQUEST_TIMEOUT, conn.send(&req)).await;
                let latency = t0.elapsed();
                let failure = match answer {
                    Ok(Ok((status, body))) => match source.check(status, &body) {
                        Ok(()) => None,
                        Err(kind) => Some((kind, Some(body))),
                    },
                    Ok(Err(e)) => Some((format!("transport: {}", root_cause(&e)), None)),
                    Err(_) => Some(("timeout".to_owned(), None)),
                };
                r.hist.saturating_record(latency.as_micros().max(1) as u64);
                match failure {
                    None => r.ok += 1,
                    Some((kind, body)) => {
                        let transport = body.is_none();
                        let mut taken = samples.lock().await;
                        if *taken < 5 {
                            *taken += 1;
                            r.samples.push(format!("{kind}: {} {}: {}", req.method, req.path, show(body.as_ref())));
                        }
                        drop(taken);
                        *r.errors.entry(kind).or_default() += 1;
                        if transport && conn.reconnect().await.is_err() {
                            // The server is gone or refusing: stop this worker rather than spin.
                            *r.errors.entry("reconnect failed".into()).or_default() += 1;
                            break;
                        }
                    }
                }
            }
            r.finished = Instant::now();
            (r, source)
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
    let mut last = start;
    let mut back = Vec::new();
    for h in handles {
        let (r, source) = h.await?;
        back.push(source);
        out.ok += r.ok;
        for (k, v) in r.errors {
            *out.errors.entry(k).or_default() += v;
        }
        out.error_samples.extend(r.samples);
        out.hist.add(&r.hist).ok();
        out.exhausted |= r.ran_dry;
        last = last.max(r.finished);
    }
    out.elapsed = last - start;
    Ok((out, back))
}

pub fn root_cause(e: &anyhow::Error) -> String {
    e.chain().last().map(ToString::to_string).unwrap_or_default()
}

fn show(body: Option<&Bytes>) -> String {
    match body {
        None => String::new(),
        Some(b) => String::from_utf8_lossy(&b[..b.len().min(300)]).replace('\n', " "),
    }
}
