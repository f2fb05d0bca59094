//! Logging: `tracing` to standard error, JSON lines (production) or human-readable (dev).
//!
//! Every line written inside a request carries the request span's fields (request id, route), so
//! one request can be followed through the log. Standard output stays free for command output.
//! Lines go through an in-memory queue to a writer thread, so a request never waits for a write
//! to standard error; when the queue is full, logging waits rather than drop lines. [`flush`]
//! writes what is queued (at exit).

use std::sync::Mutex;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);

pub fn init(filter: &str, format: LogFormat) {
    // sqlx reports every NOTICE (such as "relation already exists, skipping") at info.
    let filter = if filter.contains("sqlx") { filter.to_owned() } else { format!("{filter},sqlx=warn") };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) =
        NonBlockingBuilder::default().lossy(false).buffered_lines_limit(64 * 1024).finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .with_span_events(FmtSpan::NONE);
    // A second init (tests build several servers in one process) keeps the first subscriber.
    let installed = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    if installed.is_ok()
        && let Ok(mut slot) = GUARD.lock()
    {
        *slot = Some(guard);
    }
}

/// Write every queued line and stop the writer thread (call once, at exit).
pub fn flush() {
    if let Ok(mut slot) = GUARD.lock() {
        slot.take();
    }
}
