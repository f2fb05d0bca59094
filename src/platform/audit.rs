//! The audit log: one record per security-relevant event, in the append-only `audit_events`
//! table and as a structured log line (target `audit`).
//!
//! Records never carry a token, code, secret, password, cookie or `Authorization` header; where
//! an argument matters but must not be kept, the record holds its SHA-256. Requests hand records
//! to a bounded queue and go on; one writer task stores them in batches. When the writer falls
//! behind, the queue fills and `record` waits (backpressure) rather than dropping anything; a
//! batch that cannot be stored is retried; on shutdown the queue is drained.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::oauth::secret;

/// Records waiting for the writer before `record` starts waiting.
const QUEUE: usize = 8192;
/// Records per INSERT.
const BATCH: usize = 512;

/// The request a record was made during: its id and source address.
#[derive(Clone, Debug)]
pub struct RequestMeta {
    pub request_id: String,
    pub source: IpAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    RateLimited,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::RateLimited => "rate_limited",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub event: &'static str,
    pub outcome: Outcome,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub resource: Option<String>,
    pub scopes: Option<String>,
    pub source: Option<IpAddr>,
    pub digest: Option<String>,
    pub detail: Option<String>,
}

impl Event {
    pub fn new(event: &'static str, outcome: Outcome) -> Self {
        Self {
            at: Utc::now(),
            request_id: None,
            event,
            outcome,
            client_id: None,
            subject: None,
            resource: None,
            scopes: None,
            source: None,
            digest: None,
            detail: None,
        }
    }

    /// Request id and source address of the request this happened in.
    pub fn during(mut self, meta: &RequestMeta) -> Self {
        self.request_id = Some(meta.request_id.clone());
        self.source = Some(meta.source);
        self
    }

    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn scopes(mut self, scopes: impl Into<String>) -> Self {
        self.scopes = Some(scopes.into());
        self
    }

    /// Identify a sensitive argument by its SHA-256, never by value.
    pub fn digest_of(mut self, sensitive: &str) -> Self {
        self.digest = Some(secret::digest_hex(sensitive));
        self
    }

    /// The SHA-256 of a sensitive argument, already computed (codes and tokens are stored by digest).
    pub fn digest(mut self, sha256: &[u8]) -> Self {
        self.digest = Some(hex::encode(sha256));
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Set the detail unless one is set.
    pub fn detail_default(mut self, detail: &str) -> Self {
        if self.detail.is_none() {
            self.detail = Some(detail.to_owned());
        }
        self
    }

    /// Write the log line now (for records stored directly, not through the sink).
    pub fn log_now(&self) {
        self.log();
    }

    /// The row that stores it.
    pub fn row(&self) -> crate::store::audit::NewRow<'_> {
        crate::store::audit::NewRow {
            at: self.at,
            request_id: self.request_id.as_deref(),
            event: self.event,
            outcome: self.outcome.as_str(),
            client_id: self.client_id.as_deref(),
            subject: self.subject.as_deref(),
            resource: self.resource.as_deref(),
            scopes: self.scopes.as_deref(),
            source: self.source,
            digest: self.digest.as_deref(),
            detail: self.detail.as_deref(),
        }
    }

    fn log(&self) {
        self.log_at(false);
    }

    /// Copy the record to the log: at `info`, or at `debug` for a routine success that is stored
    /// in the database anyway (`stored`): token issuance and introspection, the bulk of an
    /// authorization server's records, which would otherwise put a log line on every call.
    fn log_at(&self, stored: bool) {
        let routine = stored && self.outcome == Outcome::Success && ROUTINE.contains(&self.event);
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(
                    target: "audit",
                    $level,
                    event = self.event,
                    outcome = self.outcome.as_str(),
                    request_id = self.request_id.as_deref(),
                    client_id = self.client_id.as_deref(),
                    subject = self.subject.as_deref(),
                    resource = self.resource.as_deref(),
                    scopes = self.scopes.as_deref(),
                    source = self.source.map(|s| s.to_string()),
                    digest = self.digest.as_deref(),
                    detail = self.detail.as_deref(),
                    "audit"
                )
            };
        }
        if routine {
            emit!(tracing::Level::DEBUG);
        } else {
            emit!(tracing::Level::INFO);
        }
    }
}

/// Successful records that are the routine traffic of machine clients.
const ROUTINE: [&str; 2] = ["token.issued", "introspection"];

/// SHA-256 (hex) of a JSON value in its RFC 8785 canonical form, so the same arguments always
/// hash the same whatever their key order or number spelling.
pub fn canonical_digest(value: &serde_json::Value) -> [u8; 32] {
    use sha2::Digest as _;
    let canonical = serde_json_canonicalizer::to_vec(value).unwrap_or_default();
    sha2::Sha256::digest(canonical).into()
}

/// Where requests hand their records. Cheap to clone: every clone feeds the same writer.
#[derive(Clone)]
pub struct AuditSink {
    /// `None`: records go to the log only (a gateway without a database).
    tx: Option<mpsc::Sender<Event>>,
    stop: CancellationToken,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl AuditSink {
    pub fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let writer = tokio::spawn(write_loop(pool, rx, stop.clone()));
        Self { tx: Some(tx), stop, writer: Arc::new(Mutex::new(Some(writer))) }
    }

    /// Records go to the log (target `audit`) only.
    pub fn log_only() -> Self {
        Self { tx: None, stop: CancellationToken::new(), writer: Arc::new(Mutex::new(None)) }
    }

    /// Log the record and queue it for the table; waits only when the queue is full.
    pub async fn record(&self, event: Event) {
        event.log_at(self.tx.is_some());
        crate::platform::metrics::audit_queued(self.depth());
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::error::SendError(event)) = tx.send(event).await {
            // Only after shutdown: the writer is gone, so say it loudly instead of dropping it.
            tracing::error!(target: "audit", event = event.event, "audit record after shutdown, not stored");
        }
    }

    /// Records waiting to be written.
    pub fn depth(&self) -> usize {
        self.tx.as_ref().map_or(0, |tx| QUEUE - tx.capacity())
    }

    /// Store everything queued, then stop the writer.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

async fn write_loop(pool: PgPool, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                false
            }
            _ = stop.cancelled() => {
                rx.close();
                while let Ok(event) = rx.try_recv() {
                    batch.push(event);
                }
                true
            }
        };
        for chunk in batch.chunks(BATCH) {
            store(&pool, chunk, stopping).await;
        }
        batch.clear();
        if stopping {
            return;
        }
    }
}

/// Store a batch, retrying while the database is unavailable. On shutdown, give up after a few
/// attempts and write every unsaved record to the log at error level (never silently).
async fn store(pool: &PgPool, events: &[Event], stopping: bool) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        let rows: Vec<_> = events.iter().map(Event::row).collect();
        match crate::store::audit::insert(pool, &rows).await {
            Ok(()) => return,
            Err(e) if stopping && attempt >= 3 => {
                tracing::error!(target: "audit", error = %e, count = events.len(), "audit records could not be stored");
                for event in events {
                    tracing::error!(
                        target: "audit",
                        event = event.event,
                        outcome = event.outcome.as_str(),
                        request_id = event.request_id.as_deref(),
                        client_id = event.client_id.as_deref(),
                        subject = event.subject.as_deref(),
                        at = %event.at,
                        "audit record not stored"
                    );
                }
                return;
            }
            Err(e) => {
                tracing::error!(target: "audit", error = %e, attempt, "storing audit records failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
